//! Build logs under the log directory, where CppNix and its clients look
//! for them: `drvs/<first two characters of the .drv base name>/<the rest>`,
//! bzip2-compressed with a `.bz2` suffix.

use super::LocalStore;
use super::error::{IoContext, Result};
use std::io::{Read, Write};
use std::path::PathBuf;
use store::store_path::StorePath;

impl LocalStore {
    /// Where the compressed log of `drv` lives.
    pub fn build_log_path(&self, drv: &StorePath) -> PathBuf {
        let base = drv.base_name();
        self.shared.config.log_dir.join("drvs").join(&base[..2]).join(format!("{}.bz2", &base[2..]))
    }

    /// Stores a build log (`AddBuildLog`), compressing it as it is read.
    /// An existing log is kept, as CppNix does.
    pub fn add_build_log(&self, drv: &StorePath, log: &mut dyn Read) -> Result<()> {
        let dest = self.build_log_path(drv);
        if dest.exists() {
            std::io::copy(log, &mut std::io::sink()).at("reading the log for", &dest)?;
            return Ok(());
        }
        let dir = dest.parent().expect("log paths have a parent");
        std::fs::create_dir_all(dir).at("creating directory", dir)?;
        let tmp = dest.with_extension(format!("bz2.tmp.{}", std::process::id()));
        let file = std::fs::File::create(&tmp).at("creating", &tmp)?;
        let mut enc = bzip2::write::BzEncoder::new(file, bzip2::Compression::default());
        let copied = std::io::copy(log, &mut enc).and_then(|_| enc.finish()).and_then(|mut f| f.flush());
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).at("writing", &tmp);
        }
        std::fs::rename(&tmp, &dest).at("renaming into", &dest)
    }
}
