//! Snapshots as files, streamed. A snapshot is the state machine's
//! [`Applied`] as JSON, written through a buffer straight to a file in
//! `<data dir>/snapshots/` (created `0600`, fsynced, renamed into place,
//! the directory fsynced) and read back through a buffer, so that neither
//! building, sending, receiving nor loading one holds a second encoded
//! copy of the key space in memory. The log database records only which
//! file is current and its Raft metadata ([`Record`]).
//!
//! A snapshot sent by the leader is written by openraft into an
//! `incoming-*` file, parsed from it, and then renamed to a name of this
//! member's choosing (never one taken from the peer). The two newest
//! snapshots are kept, so that one being read while a newer one lands is
//! never removed under its reader; leftover `incoming-*` files of an
//! interrupted transfer are removed at start.
//!
//! Before this, a snapshot was kept inside the log database as one value;
//! such a store is converted at its first start.

use std::{
    fs::{File, OpenOptions},
    io::{BufReader, Seek as _, SeekFrom},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use super::{Node, NodeId, sm::Applied};

/// The log database's key for the current snapshot's [`Record`].
pub(super) const RECORD: &str = "snapshot-file";

/// The current snapshot: its metadata and file name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) meta: SnapshotMeta<NodeId, Node>,
    pub(super) file: String,
}

const PREFIX: &str = "snapshot-";
const INCOMING: &str = "incoming-";
/// How many snapshot files are kept.
const KEEP: usize = 2;

/// The snapshot directory.
#[derive(Clone, Debug)]
pub(crate) struct Snapshots {
    dir: PathBuf,
}

fn bad_data(e: serde_json::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

impl Snapshots {
    /// Opens (making it `0700` if missing) `<data_dir>/snapshots`, and
    /// removes what an interrupted transfer left.
    pub(crate) fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("snapshots");
        crate::files::private_dir(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(INCOMING) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Self { dir })
    }

    /// A new file name for a snapshot up to log `index` (names sort by
    /// index).
    fn name(index: u64) -> String {
        format!("{PREFIX}{index:020}-{:08x}.json", rand::random::<u32>())
    }

    /// Writes `applied` as a new snapshot file (blocking); its name.
    pub(crate) fn write(&self, applied: &Applied, index: u64) -> std::io::Result<String> {
        let name = Self::name(index);
        crate::files::write_durably_with(&self.dir.join(&name), 0o600, |w| {
            serde_json::to_writer(w, applied).map_err(std::io::Error::other)
        })?;
        Ok(name)
    }

    /// Writes the bytes of a snapshot encoded before (blocking); its name.
    pub(crate) fn write_bytes(&self, bytes: &[u8], index: u64) -> std::io::Result<String> {
        let name = Self::name(index);
        crate::files::write_durably(&self.dir.join(&name), bytes, 0o600)?;
        Ok(name)
    }

    /// Opens snapshot `file` for reading. Names come from this member's
    /// own records only.
    pub(crate) fn open_file(&self, file: &str) -> std::io::Result<File> {
        File::open(self.dir.join(file))
    }

    /// Reads snapshot `file` (blocking).
    pub(crate) fn read(&self, file: &str) -> std::io::Result<Applied> {
        let f = self.open_file(file)?;
        serde_json::from_reader(BufReader::with_capacity(1 << 20, f)).map_err(bad_data)
    }

    /// A new file for a snapshot being received, open for reading and
    /// writing.
    pub(crate) fn incoming(&self) -> std::io::Result<File> {
        let name = format!("{INCOMING}{:016x}.json", rand::random::<u64>());
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.dir.join(name))
    }

    /// The name of the `incoming-*` file `f` is (matched by inode).
    fn incoming_name(&self, f: &File) -> std::io::Result<String> {
        let meta = f.metadata()?;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(INCOMING) && entry.metadata()?.ino() == meta.ino() {
                return Ok(name);
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the received snapshot's file is gone",
        ))
    }

    /// Parses a received snapshot from its `incoming-*` file and keeps it
    /// as the snapshot up to `index` (blocking): the state and the file's
    /// new name. A file that does not parse is removed.
    pub(crate) fn adopt(&self, mut f: File, index: u64) -> std::io::Result<(Applied, String)> {
        let incoming = self.incoming_name(&f)?;
        let parsed = f
            .sync_all()
            .and_then(|()| f.seek(SeekFrom::Start(0)))
            .and_then(|_| {
                serde_json::from_reader(BufReader::with_capacity(1 << 20, &f)).map_err(bad_data)
            });
        let applied = match parsed {
            Ok(a) => a,
            Err(e) => {
                let _ = std::fs::remove_file(self.dir.join(&incoming));
                return Err(e);
            }
        };
        let name = Self::name(index);
        std::fs::rename(self.dir.join(&incoming), self.dir.join(&name))?;
        File::open(&self.dir)?.sync_all()?;
        Ok((applied, name))
    }

    /// Removes the snapshot files but `current` (the one the record names)
    /// and the newest other ones, [`KEEP`] in all.
    pub(crate) fn prune(&self, current: &str) -> std::io::Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(PREFIX) && n != current)
            .collect();
        names.sort();
        let old = names.len().saturating_sub(KEEP - 1);
        for n in &names[..old] {
            std::fs::remove_file(self.dir.join(n))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_only_the_newest_two_stay() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(dir.path()).unwrap();
        let applied = Applied::default();
        let names: Vec<String> = (1..=3).map(|i| snaps.write(&applied, i).unwrap()).collect();
        snaps.prune(&names[2]).unwrap();
        assert!(snaps.open_file(&names[0]).is_err());
        assert!(snaps.open_file(&names[1]).is_ok());
        // The current one stays whatever its name sorts as.
        snaps.prune(&names[1]).unwrap();
        assert!(snaps.open_file(&names[1]).is_ok() && snaps.open_file(&names[2]).is_ok());
        let back = snaps.read(&names[2]).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&applied).unwrap()
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("snapshots").join(&names[2]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_received_snapshot_is_adopted_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(dir.path()).unwrap();
        let mut f = snaps.incoming().unwrap();
        f.write_all(
            serde_json::to_string(&Applied::default())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let (_, name) = snaps.adopt(f, 7).unwrap();
        assert!(name.starts_with("snapshot-00000000000000000007-"));
        assert!(snaps.read(&name).is_ok());
        let mut junk = snaps.incoming().unwrap();
        junk.write_all(b"{\"not\": a snapshot").unwrap();
        assert!(snaps.adopt(junk, 8).is_err());
        // Neither the junk nor a leftover of an interrupted transfer stays.
        drop(snaps.incoming().unwrap());
        Snapshots::open(dir.path()).unwrap();
        let left: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [name]);
    }
}
