//! Shared files: the index record of a file, the blobs on disk, and the transfer streams.
//!
//! Layout under `Config::files_dir()`: `<group id>/<file id>` holds each complete file;
//! an upload is written to `tmp/<file id>.part`, fsynced, and renamed into place only when
//! every declared byte has arrived. Its index entry (a [`FileRec`] among the group's store
//! records) is committed by the group actor after the rename, like any other change of the
//! group, and the `uploadFile` event follows that commit. So, whatever moment a crash hits:
//! - before the rename, only a temp file exists: [`Files::open`] removes the partial
//!   uploads (`tmp/<file id>.part`) at start, and nothing else in `tmp/`;
//! - between the rename and the commit, a blob exists without an entry: [`Files::open`]
//!   moves blobs that no entry names to `quarantine/<group id>/<file id>` (counted and
//!   logged; an operator deletes them, or puts them back after restoring a database);
//! - an entry is only ever committed for a blob that is already complete and durable.
//!
//! Start-up never deletes a blob: if the store holds no group at all while blobs exist (a
//! database that was lost, replaced or not yet restored), it sweeps nothing and says so.
//!
//! A blob is removed only after the commit that dropped its entry (deleteGroupSharedFile,
//! destroyGroup; see `group::files::after_commit`), so a listed file is always
//! downloadable. Files never pass through memory whole: both directions stream 64 KiB
//! chunks ([`upload`], [`download`]).
//!
//! An upload whose stream breaks (connection lost) is kept in `tmp/`, fsynced, with its
//! place under the quota, for `files.resume_keep_secs`, so that its user can resume it
//! from the last durable byte ([`resume`]); a download can start at a byte offset.

pub mod download;
pub mod resume;
pub mod upload;

use crate::group::persist::GroupStore;
use crate::store::Store;
use bincode::{Decode, Encode};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::transfer::TransferReply;
use convoke_protocol::{ApiError, SharedFile};
use resume::Resumes;
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes moved per chunk, both directions.
pub(crate) const CHUNK: usize = convoke_protocol::transfer::CHUNK_BYTES;

/// A shared file's index entry, stored under the group's prefix (`store::keys::file_key`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FileRec {
    /// The name it was uploaded under (display only; never part of a path).
    pub name: String,
    /// The uploader.
    pub owner: String,
    /// Bytes.
    pub size: u64,
    /// Upload completion, ms since the Unix epoch.
    pub created: i64,
    pub content_type: String,
    /// Hex SHA-256 of the content, computed while it streamed in.
    pub sha256: String,
    /// Hex random download secret (see `protocol::SharedFile::secret`).
    pub secret: String,
}

impl FileRec {
    /// The entry clients see, for file `id`.
    pub fn entry(&self, id: u64) -> SharedFile {
        SharedFile {
            file_id: id.to_string(),
            file_name: self.name.clone(),
            file_owner: self.owner.clone(),
            file_size: self.size,
            created: self.created,
            content_type: self.content_type.clone(),
            sha256: self.sha256.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// The shared-file quotas (`limits.max_file_bytes`, `limits.max_files_per_group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    pub max_file_bytes: u64,
    pub max_files_per_group: usize,
}

/// The node's blob directory, quotas and resumable uploads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
    tmp: PathBuf,
    pub limits: FileLimits,
    /// Uploads being received, kept for a resume, or recently completed.
    pub uploads: Arc<Resumes<upload::Kept>>,
}

/// What [`Files::open`] cleaned up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Partial uploads (`tmp/<file id>.part`) removed.
    pub temp_files: usize,
    /// Blobs with no index entry (crash between rename and commit), or of a group that no
    /// longer exists, moved to `quarantine/`.
    pub orphans: usize,
    /// Entries of `tmp/` that are not partial uploads, left where they are.
    pub foreign: usize,
    /// The store holds no group while blobs exist: nothing was swept.
    pub refused: bool,
}

impl Files {
    /// Opens `root` (creating it and `root/tmp`), removes the partial uploads left in
    /// `tmp/`, and moves blobs that no index entry in `store` names to `quarantine/`. Runs
    /// before the node accepts connections, so no upload can be between its rename and its
    /// commit. Never deletes a blob (see the module doc).
    pub fn open(root: PathBuf, limits: FileLimits, store: &Store) -> io::Result<(Self, Sweep)> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let files = Self {
            root,
            tmp,
            limits,
            uploads: Arc::default(),
        };
        let mut sweep = Sweep::default();
        for entry in std::fs::read_dir(&files.tmp)? {
            let entry = entry?;
            let name = entry.file_name();
            let partial = name
                .to_str()
                .and_then(|n| n.strip_suffix(".part"))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
            if partial && entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                sweep.temp_files += 1;
            } else {
                tracing::warn!(path = %entry.path().display(), "not a partial upload; left in place");
                sweep.foreign += 1;
            }
        }
        let groups = blob_groups(&files.root)?;
        if !groups.is_empty() && !store.has_groups().map_err(io::Error::other)? {
            let blobs: usize = groups.iter().map(|(_, n)| n).sum();
            tracing::error!(
                dir = %files.root.display(),
                blobs,
                "the store holds no group but the files dir holds blobs (a lost, replaced or not yet restored database?): sweeping nothing"
            );
            sweep.refused = true;
            return Ok((files, sweep));
        }
        for (gid, _) in groups {
            // A group whose records cannot be read keeps its blobs.
            let known = match store.meta(gid) {
                Ok(Some(_)) => match store.file_ids(gid) {
                    Ok(ids) => ids,
                    Err(e) => {
                        tracing::error!(group = gid, error = %e, "cannot read the group's file index; its blobs are left alone");
                        continue;
                    }
                },
                Ok(None) => BTreeSet::new(),
                Err(e) => {
                    tracing::error!(group = gid, error = %e, "cannot read the group; its blobs are left alone");
                    continue;
                }
            };
            let dir = files.group_dir(gid);
            for blob in std::fs::read_dir(&dir)? {
                let blob = blob?;
                let Some(id) = blob
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue; // not a blob name of ours: left alone.
                };
                if !known.contains(&id) {
                    let to = files.quarantine(gid, id, &blob.path())?;
                    tracing::warn!(group = gid, file = id, to = %to.display(), "blob without an index entry moved to quarantine");
                    metrics::counter!("convoke_file_orphans_quarantined_total").increment(1);
                    sweep.orphans += 1;
                }
            }
            if known.is_empty() {
                // Only if empty: anything left in it stays.
                let _ = std::fs::remove_dir(&dir);
            }
        }
        if sweep.temp_files > 0 || sweep.orphans > 0 {
            tracing::info!(
                temp_files = sweep.temp_files,
                orphans = sweep.orphans,
                "start-up sweep: partial uploads removed, orphan blobs quarantined"
            );
        }
        Ok((files, sweep))
    }

    /// Moves an orphan blob to `quarantine/<gid>/<fid>` (a numbered name if that is taken).
    fn quarantine(&self, gid: u64, fid: u64, from: &Path) -> io::Result<PathBuf> {
        let dir = self.root.join("quarantine").join(gid.to_string());
        std::fs::create_dir_all(&dir)?;
        let mut to = dir.join(fid.to_string());
        let mut n = 1;
        while to.exists() {
            to = dir.join(format!("{fid}.{n}"));
            n += 1;
        }
        std::fs::rename(from, &to)?;
        sync_dir(&dir)?;
        if let Some(parent) = from.parent() {
            sync_dir(parent)?;
        }
        Ok(to)
    }

    /// Where file `fid` of group `gid` lives once complete.
    pub fn blob_path(&self, gid: u64, fid: u64) -> PathBuf {
        self.group_dir(gid).join(fid.to_string())
    }

    /// Where the upload of file `fid` is written until complete.
    pub fn temp_path(&self, fid: u64) -> PathBuf {
        self.tmp.join(format!("{fid}.part"))
    }

    /// The temp directory (empty whenever no upload is running).
    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    fn group_dir(&self, gid: u64) -> PathBuf {
        self.root.join(gid.to_string())
    }

    /// Moves a complete, fsynced temp file into place, durably (the directories that
    /// changed are fsynced too, so the rename survives a crash once this returns).
    pub async fn install(&self, temp: &Path, gid: u64, fid: u64) -> io::Result<PathBuf> {
        let dir = self.group_dir(gid);
        let blob = self.blob_path(gid, fid);
        let root = self.root.clone();
        let temp = temp.to_path_buf();
        let target = blob.clone();
        tokio::task::spawn_blocking(move || {
            let created = !dir.is_dir();
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(&temp, &target)?;
            sync_dir(&dir)?;
            if let Some(tmp) = temp.parent() {
                sync_dir(tmp)?;
            }
            if created {
                sync_dir(&root)?;
            }
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(io::Error::other)??;
        Ok(blob)
    }

    /// Removes one blob (after the commit that dropped its entry). Failures are logged:
    /// the entry is already gone, and the next start sweeps what is left.
    pub fn remove_blob(&self, gid: u64, fid: u64) {
        let path = self.blob_path(gid, fid);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(group = gid, file = fid, path = %path.display(), error = %e, "could not remove a deleted file's blob");
            }
        }
    }

    /// Removes a destroyed group's blobs, in the background (a group may hold thousands).
    pub fn remove_group(&self, gid: u64) {
        let dir = self.group_dir(gid);
        let work = move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(group = gid, dir = %dir.display(), error = %e, "could not remove a destroyed group's files");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(work)),
            Err(_) => work(),
        }
    }
}

/// Writes a transfer's outcome frame and finishes the stream. A peer that is gone gets
/// nothing, which is fine: it has given up on the transfer.
pub(crate) async fn answer(send: &mut quinn::SendStream, result: Result<SharedFile, ApiError>) {
    if write_reply(send, TransferReply::Outcome(result)).await {
        let _ = send.finish();
    }
}

/// Writes a transfer's outcome frame; false if the stream is gone.
pub(crate) async fn write_outcome(
    send: &mut quinn::SendStream,
    result: Result<SharedFile, ApiError>,
) -> bool {
    write_reply(send, TransferReply::Outcome(result)).await
}

/// Writes one frame on a transfer stream; false if the stream is gone.
pub(crate) async fn write_reply(send: &mut quinn::SendStream, reply: TransferReply) -> bool {
    match frame_bytes(&reply) {
        Ok(frame) => send.write_all(&frame).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "transfer reply could not be encoded");
            let _ = send.reset(0u32.into());
            false
        }
    }
}

/// The group directories under `root` (named by a group id) and how many entries each has.
fn blob_groups(root: &Path) -> io::Result<Vec<(u64, usize)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Some(gid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue; // tmp/, quarantine/, or something an operator put there.
        };
        if entry.file_type()?.is_dir() {
            out.push((gid, std::fs::read_dir(entry.path())?.count()));
        }
    }
    Ok(out)
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_carries_every_field() {
        let rec = FileRec {
            name: "a.txt".into(),
            owner: "alice".into(),
            size: 3,
            created: 9,
            content_type: "text/plain".into(),
            sha256: "ab".into(),
            secret: "cd".into(),
        };
        let e = rec.entry(17);
        assert_eq!(e.file_id, "17");
        assert_eq!(
            (e.file_name.as_str(), e.file_owner.as_str()),
            ("a.txt", "alice")
        );
        assert_eq!((e.file_size, e.created), (3, 9));
        assert_eq!((e.sha256.as_str(), e.secret.as_str()), ("ab", "cd"));
    }

    fn limits() -> FileLimits {
        FileLimits {
            max_file_bytes: 10,
            max_files_per_group: 10,
        }
    }

    #[tokio::test]
    async fn open_removes_partials_and_quarantines_unindexed_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db"), 1 << 20).expect("store");
        // One group exists (so the store is not empty); group 77 does not.
        let meta = crate::group::model::GroupMeta {
            name: "g".into(),
            description: String::new(),
            owner: "o".into(),
            created: 0,
            maxusers: 10,
            public: false,
            membersonly: false,
            allowinvites: false,
            invite_need_confirm: false,
            mute_all: false,
            ext: String::new(),
            announcement: String::new(),
            member_count: 1,
        };
        let g = crate::group::model::Group::new(3, meta);
        let mut ws = crate::store::WriteSet::default();
        store.group_writes(&g, &[crate::group::rules::Dirty::Meta], &mut ws);
        store.commit(ws).await.expect("commit");
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("tmp/keep-me")).expect("mkdir");
        std::fs::write(root.join("tmp/5.part"), b"half").expect("write");
        std::fs::write(root.join("tmp/notes.txt"), b"operator's").expect("write");
        std::fs::create_dir_all(root.join("77")).expect("mkdir");
        std::fs::write(root.join("77/8"), b"blob").expect("write");
        std::fs::create_dir_all(root.join("3")).expect("mkdir");
        std::fs::write(root.join("3/9"), b"unindexed").expect("write");
        std::fs::write(root.join("README"), b"not ours").expect("write");
        let (files, sweep) = Files::open(root.clone(), limits(), &store).expect("open");
        assert_eq!(
            sweep,
            Sweep {
                temp_files: 1,
                orphans: 2,
                foreign: 2,
                refused: false,
            }
        );
        assert!(!root.join("tmp/5.part").exists());
        assert!(root.join("tmp/notes.txt").exists());
        assert!(root.join("tmp/keep-me").is_dir());
        assert_eq!(
            std::fs::read(root.join("quarantine/77/8")).expect("q"),
            b"blob"
        );
        assert_eq!(
            std::fs::read(root.join("quarantine/3/9")).expect("q"),
            b"unindexed"
        );
        assert!(!root.join("77").exists());
        assert!(root.join("README").exists());
        assert_eq!(files.blob_path(3, 4), root.join("3").join("4"));
        assert_eq!(files.temp_path(4), root.join("tmp").join("4.part"));
    }

    /// A store without any group (lost or replaced) next to blobs: nothing is swept.
    #[test]
    fn open_with_an_empty_store_touches_no_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db"), 1 << 20).expect("store");
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("12")).expect("mkdir");
        std::fs::write(root.join("12/34"), b"precious").expect("write");
        let (_, sweep) = Files::open(root.clone(), limits(), &store).expect("open");
        assert!(sweep.refused);
        assert_eq!(sweep.orphans, 0);
        assert_eq!(
            std::fs::read(root.join("12/34")).expect("blob"),
            b"precious"
        );
    }
}
