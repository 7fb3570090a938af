//! The files origin: a folder whose CSV, Parquet and NDJSON files are tables.
//!
//! Files are read by DataFusion itself (projection and, for Parquet, filters
//! pushed into the reader), so the "origin part" of a plan is the file scan.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::TableProvider;

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use switchyard_config::{Dataset, DatasetSource};

use crate::origin::Origin;
use crate::{ConnectorError, Result};

/// File formats by extension, in the order a table name is looked up.
const FORMATS: &[&str] = &["parquet", "csv", "ndjson", "jsonl", "json"];

fn format_for(ext: &str) -> Option<Arc<dyn FileFormat>> {
    Some(match ext {
        "parquet" => Arc::new(ParquetFormat::default()),
        "csv" => Arc::new(CsvFormat::default().with_has_header(true)),
        "ndjson" | "jsonl" | "json" => Arc::new(JsonFormat::default()),
        _ => return None,
    })
}

/// Finds `name` in `dir`: `name.<ext>` for a known extension, or a sub-folder `name/`
/// holding files of one known extension.
fn locate(dir: &Path, name: &str) -> Option<(PathBuf, &'static str)> {
    for ext in FORMATS {
        let file = dir.join(format!("{name}.{ext}"));
        if file.is_file() {
            return Some((file, ext));
        }
    }
    let folder = dir.join(name);
    if folder.is_dir() {
        let entries = std::fs::read_dir(&folder).ok()?;
        for entry in entries.flatten() {
            let path = entry.path();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if let Some(ext) = FORMATS.iter().find(|f| **f == ext) {
                return Some((folder, ext));
            }
        }
    }
    None
}

/// A folder of files: each dataset is a file (or a folder of files) named after it.
#[derive(Debug)]
pub struct FilesConnector {
    origin: String,
    path: PathBuf,
}

impl FilesConnector {
    /// The origin `name` over the folder `path`.
    pub fn new(name: &str, path: &Path) -> Self {
        FilesConnector {
            origin: name.to_string(),
            path: path.to_path_buf(),
        }
    }
}

#[async_trait]
impl Origin for FilesConnector {
    fn name(&self) -> &str {
        &self.origin
    }

    async fn table(&self, dataset: &Dataset) -> Result<Arc<dyn TableProvider>> {
        match &dataset.source {
            DatasetSource::Table {
                table: name,
                filters,
            } if filters.is_empty() => {
                let state = SessionContext::new().state();
                table(&state, &self.origin, &self.path, name).await
            }
            _ => Err(ConnectorError::DataFusion(DataFusionError::NotImplemented(
                format!(
                    "dataset {}: filters and queries are not supported on files origins yet",
                    dataset.qualified_name()
                ),
            ))),
        }
    }
}

/// A table over the file (or folder of files) `name` in `dir`.
pub async fn table(
    state: &dyn Session,
    origin: &str,
    dir: &Path,
    name: &str,
) -> Result<Arc<dyn TableProvider>> {
    let (path, ext) = locate(dir, name).ok_or_else(|| ConnectorError::NotFound {
        origin: origin.to_string(),
        object: format!(
            "{name} (looked for {name}.{{{}}} and {name}/ in {})",
            FORMATS.join(","),
            dir.display()
        ),
    })?;
    let format = format_for(ext).expect("FORMATS only lists known formats");
    let mut url = path.to_string_lossy().into_owned();
    if path.is_dir() && !url.ends_with('/') {
        url.push('/');
    }
    let url = ListingTableUrl::parse(&url)?;
    let options = ListingOptions::new(format).with_file_extension(format!(".{ext}"));
    let schema = options.infer_schema(state, &url).await?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}
