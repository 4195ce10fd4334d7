//! The SQL of CppNix's store database, schema version 10, identical in
//! structure to CppNix 2.8's and 2.26's `schema.sql` and
//! `ca-specific-schema.sql` (see the team notes local-store.md §2), so
//! either daemon can open what the other created.

/// Value of `$state/db/schema`.
pub const SCHEMA_VERSION: u32 = 10;

/// Value of `$state/db/ca-schema` as CppNix ≤ 2.25 tracks the CA tables.
pub const CA_SCHEMA_VERSION: u32 = 3;

/// Name of the CA migration row in CppNix 2.26's `SchemaMigrations`.
pub const CA_MIGRATION: &str = "20220326-ca-derivations";

pub const BASE: &str = "
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);

create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);

create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);

create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;

create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);

create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
";

/// Run on every open, as CppNix 2.26 does (absent from 2.8-made databases,
/// which 2.8 does not mind).
pub const SCHEMA_MIGRATIONS: &str =
    "create table if not exists SchemaMigrations (migration text primary key not null);";

/// The content-addressed derivation tables, with 2.26's extra trigger and
/// index; every statement is `if not exists`, so it is safe on a database
/// where 2.8 or 2.26 already made them.
pub const CA: &str = "
create table if not exists Realisations (
    id integer primary key autoincrement not null,
    drvPath text not null,
    outputName text not null,
    outputPath integer not null,
    signatures text,
    foreign key (outputPath) references ValidPaths(id) on delete cascade
);

create index if not exists IndexRealisations on Realisations(drvPath, outputName);

create table if not exists RealisationsRefs (
    referrer integer not null,
    realisationReference integer,
    foreign key (referrer) references Realisations(id) on delete cascade,
    foreign key (realisationReference) references Realisations(id) on delete restrict
);

create index if not exists IndexRealisationsRefs on RealisationsRefs(referrer);
create index if not exists IndexRealisationsRefsOnOutputPath on Realisations(outputPath);

create trigger if not exists DeleteSelfRefsViaRealisations before delete on ValidPaths
  begin
    delete from RealisationsRefs where realisationReference in (
      select id from Realisations where outputPath = old.id
    );
  end;

create index if not exists IndexRealisationsRefsRealisationReference on RealisationsRefs(realisationReference);
";
