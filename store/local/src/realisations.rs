//! Realisations of content-addressed derivation outputs in the
//! `Realisations`/`RealisationsRefs` tables (present only with the
//! `ca-derivations` feature, as in CppNix).

use super::LocalStore;
use super::db::{Db, retry_busy};
use super::error::{Error, Result};
use rusqlite::{OptionalExtension, params};
use store::realisation::{DrvOutput, Realisation};

impl LocalStore {
    fn require_ca(&self) -> Result<()> {
        if self.shared.config.ca_derivations { Ok(()) } else { Err(Error::CaDerivationsDisabled) }
    }

    /// Records a realisation (merging signatures into an existing
    /// compatible one; a different output path for the same id is an error).
    pub fn register_realisation(&self, r: &Realisation) -> Result<()> {
        self.require_ca()?;
        let out = self.display(&r.out_path);
        self.db().with_txn(|tx| {
            let out_id: i64 = tx
                .prepare_cached("select id from ValidPaths where path = ?")?
                .query_row([&out], |row| row.get(0))
                .optional()?
                .ok_or_else(|| Error::InvalidPath(out.clone()))?;
            let existing: Option<(i64, i64, Option<String>)> = tx
                .prepare_cached(
                    "select id, outputPath, signatures from Realisations where drvPath = ? and outputName = ?",
                )?
                .query_row(params![r.id.hash_string(), r.id.output], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()?;
            match existing {
                Some((id, path_id, sigs)) => {
                    if path_id != out_id {
                        let local: String =
                            tx.query_row("select path from ValidPaths where id = ?", [path_id], |row| row.get(0))?;
                        return Err(Error::RealisationConflict {
                            id: r.id.to_string(),
                            local,
                            remote: self.display(&r.out_path).to_string(),
                        });
                    }
                    let mut all: std::collections::BTreeSet<String> =
                        sigs.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
                    all.extend(r.signatures.iter().cloned());
                    tx.prepare_cached("update Realisations set signatures = ? where id = ?")?
                        .execute(params![all.into_iter().collect::<Vec<_>>().join(" "), id])?;
                }
                None => {
                    let sigs = r.signatures.iter().cloned().collect::<Vec<_>>().join(" ");
                    tx.prepare_cached(
                        "insert into Realisations (drvPath, outputName, outputPath, signatures) values (?, ?, ?, ?)",
                    )?
                    .execute(params![r.id.hash_string(), r.id.output, out_id, sigs])?;
                    let id = tx.last_insert_rowid();
                    for dep in r.dependent_realisations.keys() {
                        let dep_id: Option<i64> = tx
                            .prepare_cached("select id from Realisations where drvPath = ? and outputName = ?")?
                            .query_row(params![dep.hash_string(), dep.output], |row| row.get(0))
                            .optional()?;
                        let dep_id = dep_id.ok_or_else(|| Error::UnrealisedDerivation(dep.to_string()))?;
                        tx.prepare_cached(
                            "insert into RealisationsRefs (referrer, realisationReference) values (?, ?)",
                        )?
                        .execute(params![id, dep_id])?;
                    }
                }
            }
            Ok(())
        })
    }

    /// The realisation of a derivation output, if known.
    pub fn query_realisation(&self, id: &DrvOutput) -> Result<Option<Realisation>> {
        self.require_ca()?;
        let db = self.reader()?;
        query_realisation(&db, self, id)
    }
}

fn query_realisation(db: &Db, store: &LocalStore, id: &DrvOutput) -> Result<Option<Realisation>> {
    retry_busy(|| {
        let conn = db.conn();
        let row: Option<(i64, String, Option<String>)> = conn
            .prepare_cached(
                "select Realisations.id, Output.path, Realisations.signatures from Realisations \
                 inner join ValidPaths as Output on Output.id = Realisations.outputPath \
                 where drvPath = ? and outputName = ?",
            )?
            .query_row(params![id.hash_string(), id.output], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((rid, path, sigs)) = row else { return Ok(None) };
        let mut deps = std::collections::BTreeMap::new();
        let mut stmt = conn.prepare_cached(
            "select drvPath, outputName, Output.path from RealisationsRefs \
             inner join Realisations as Dep on Dep.id = RealisationsRefs.realisationReference \
             inner join ValidPaths as Output on Output.id = Dep.outputPath where referrer = ?",
        )?;
        for row in
            stmt.query_map([rid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        {
            let (hash, name, p) = row?;
            let dep = DrvOutput::parse(&format!("{hash}!{name}")).map_err(|e| Error::Corrupt {
                path: store.shared.config.state_dir.join("db/db.sqlite"),
                why: e.to_string(),
            })?;
            deps.insert(dep, store.parse_path(&p)?);
        }
        Ok(Some(Realisation {
            id: id.clone(),
            out_path: store.parse_path(&path)?,
            signatures: sigs.unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
            dependent_realisations: deps,
        }))
    })
}
