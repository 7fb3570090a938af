//! Catalog facts of an origin table: NOT NULL, defaults, primary, unique,
//! foreign-key and check constraints, and indexes, named as clients see the datasets.
//!
//! An origin reads them once per table ([`crate::Origin::facts`]; PostgreSQL from its
//! own pg_catalog) and they are cached on the dataset's entry; the proxy turns them
//! into its per-session pg_catalog rows.

/// Maps an origin table (schema, table) to the dataset (schema, table) that exposes it.
pub type Resolve<'a> = &'a (dyn Fn(&str, &str) -> Option<(String, String)> + Send + Sync);

/// What the origin declares about one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableFacts {
    /// Every column, in the origin's order.
    pub columns: Vec<ColumnFacts>,
    /// Primary key, unique, foreign-key and check constraints.
    pub constraints: Vec<Constraint>,
    /// Plain column indexes (including those behind primary and unique constraints).
    pub indexes: Vec<Index>,
}

/// NOT NULL and default of one column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnFacts {
    /// Column name.
    pub name: String,
    /// Declared NOT NULL.
    pub not_null: bool,
    /// The default expression as PostgreSQL prints it (`pg_get_expr`).
    pub default: Option<String>,
}

/// The kind of a constraint.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintKind {
    /// `PRIMARY KEY`.
    PrimaryKey,
    /// `UNIQUE`.
    Unique,
    /// `FOREIGN KEY ... REFERENCES`.
    ForeignKey(ForeignKey),
    /// `CHECK (...)`, with the origin's definition.
    Check(String),
}

/// One constraint of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// Constraint name.
    pub name: String,
    /// What it is.
    pub kind: ConstraintKind,
    /// Its columns, in key order.
    pub columns: Vec<String>,
    /// The index it uses: its own for a key, the referenced table's for a foreign key.
    pub index: Option<String>,
    /// `DEFERRABLE`.
    pub deferrable: bool,
    /// `INITIALLY DEFERRED`.
    pub deferred: bool,
}

/// The referenced side of a foreign key.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    /// Dataset schema of the referenced table.
    pub schema: String,
    /// Dataset name of the referenced table.
    pub table: String,
    /// Referenced columns, in key order.
    pub columns: Vec<String>,
    /// `confupdtype` (a, r, c, n, d).
    pub on_update: char,
    /// `confdeltype` (a, r, c, n, d).
    pub on_delete: char,
    /// `confmatchtype` (f, p, s).
    pub match_type: char,
}

/// One index on a table's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// Index name.
    pub name: String,
    /// `UNIQUE`.
    pub unique: bool,
    /// Backs the primary key.
    pub primary: bool,
    /// Access method (btree, hash, ...).
    pub method: String,
    /// Key columns, in order.
    pub columns: Vec<String>,
    /// `INCLUDE` columns.
    pub include: Vec<String>,
}

impl Index {
    /// Every column the index names.
    pub fn all_columns(&self) -> impl Iterator<Item = &String> {
        self.columns.iter().chain(&self.include)
    }
}
