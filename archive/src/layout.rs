//! Object names: `<prefix>/cluster.json`, and per partition `<prefix>/p<partition>/manifest.json`,
//! `…/seg/<epoch>-<first LSN>` and `…/snap/<LSN>`, numbers as 20 decimal digits so that names
//! sort in LSN order. The prefix is `<cluster name>-<cluster id>`.

use object_store::path::Path;
use strata_core::{Epoch, Lsn, PartitionId};

use crate::error::ArchiveError;

/// Where one cluster's objects live in the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// # Errors
    ///
    /// [`ArchiveError::Config`] for an empty prefix or one with characters other than ASCII
    /// letters, digits, `-`, `_`, `.` and `/` between parts.
    pub fn new(prefix: &str) -> Result<Layout, ArchiveError> {
        let prefix = prefix.trim_matches('/');
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
        let bad_part = prefix.split('/').any(|part| part.is_empty() || part == "." || part == "..");
        if prefix.is_empty() || !prefix.chars().all(allowed) || bad_part {
            return Err(ArchiveError::Config {
                reason: format!("archive prefix {prefix:?} must be letters, digits, - _ . and /"),
            });
        }
        Ok(Layout { prefix: prefix.to_string() })
    }

    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    #[must_use]
    pub fn cluster_manifest(&self) -> Path {
        Path::from(format!("{}/cluster.json", self.prefix))
    }

    #[must_use]
    pub fn partition_manifest(&self, partition: PartitionId) -> Path {
        Path::from(format!("{}/p{}/manifest.json", self.prefix, partition.0))
    }

    /// The name of a segment object relative to its partition, as manifests record it.
    #[must_use]
    pub fn segment_name(epoch: Epoch, first_lsn: Lsn) -> String {
        format!("seg/{:020}-{:020}", epoch.0, first_lsn.0)
    }

    #[must_use]
    pub fn snapshot_name(lsn: Lsn) -> String {
        format!("snap/{:020}", lsn.0)
    }

    /// The folder of one partition's objects (its manifest, `seg/` and `snap/`).
    #[must_use]
    pub fn partition_folder(&self, partition: PartitionId) -> Path {
        Path::from(format!("{}/p{}", self.prefix, partition.0))
    }

    /// The full path of an object named relative to its partition.
    #[must_use]
    pub fn object(&self, partition: PartitionId, name: &str) -> Path {
        Path::from(format!("{}/p{}/{name}", self.prefix, partition.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_lsn_and_bad_prefixes_are_refused() {
        let layout = Layout::new("demo-0123abcd").unwrap();
        let early = layout.object(PartitionId(3), &Layout::segment_name(Epoch(1), Lsn(9)));
        let late = layout.object(PartitionId(3), &Layout::segment_name(Epoch(1), Lsn(10)));
        assert_eq!(
            early.as_ref(),
            "demo-0123abcd/p3/seg/00000000000000000001-00000000000000000009"
        );
        assert!(early.as_ref() < late.as_ref());
        assert_eq!(
            layout.partition_manifest(PartitionId(0)).as_ref(),
            "demo-0123abcd/p0/manifest.json"
        );
        for bad in ["", "a b", "../x", "a//b", "x/./y"] {
            assert!(Layout::new(bad).is_err(), "{bad:?}");
        }
    }
}
