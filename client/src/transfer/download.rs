//! downloadGroupSharedFile: header frame and end of stream, then the broker's outcome (the
//! file's entry) followed by the raw bytes. The byte count (and the SHA-256, when the entry
//! carries one) is verified; a path destination is written to `<path>.part` and renamed
//! only when complete.

use super::{
    abort, cancelled, open_stream, read_error, read_outcome, report, ProgressFn, Transfer,
};
use crate::client::Client;
use crate::connection::Shared;
use crate::error::ClientError;
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::transfer::TransferHeader;
use convoke_protocol::SharedFile;
use quinn::{RecvStream, SendStream};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Where a download goes.
pub enum DownloadDest {
    /// A file, written as `<path>.part` and renamed when the download is complete and
    /// verified (removed on failure).
    Path(PathBuf),
    /// Any writer; on failure it may hold part of the file.
    Writer(Box<dyn AsyncWrite + Send + Unpin + 'static>),
}

impl DownloadDest {
    /// A file path.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::Path(path.into())
    }

    /// Any writer.
    pub fn writer(writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Self::Writer(Box::new(writer))
    }
}

impl From<PathBuf> for DownloadDest {
    fn from(path: PathBuf) -> Self {
        Self::Path(path)
    }
}

impl From<&Path> for DownloadDest {
    fn from(path: &Path) -> Self {
        Self::Path(path.to_path_buf())
    }
}

impl From<&str> for DownloadDest {
    fn from(path: &str) -> Self {
        Self::Path(PathBuf::from(path))
    }
}

impl fmt::Debug for DownloadDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// `<path>.part`.
pub(crate) fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

impl Client {
    /// downloadGroupSharedFile (member): streams a shared file into `dest`.
    ///
    /// Returns at once with a running [`Transfer`]; await it for the file's entry. A missing
    /// file or a wrong `secret` is [`ClientError::Api`] (`DownloadFileError`); fewer or more
    /// bytes than announced, or a SHA-256 mismatch, is [`ClientError::Io`] /
    /// [`ClientError::Protocol`]. Must be called within a tokio runtime.
    pub fn download_group_shared_file(
        &self,
        group_id: &str,
        file_id: &str,
        secret: Option<&str>,
        dest: impl Into<DownloadDest>,
        progress: Option<ProgressFn>,
    ) -> Transfer {
        let client = self.clone();
        let header = TransferHeader::Download {
            group_id: group_id.to_string(),
            file_id: file_id.to_string(),
            secret: secret.map(str::to_string),
        };
        let dest = dest.into();
        Transfer::spawn(move |cancel| download(client, header, dest, progress, cancel))
    }
}

async fn download(
    client: Client,
    header: TransferHeader,
    dest: DownloadDest,
    mut progress: Option<ProgressFn>,
    mut cancel: watch::Receiver<bool>,
) -> Result<SharedFile, ClientError> {
    let shared = client.shared().clone();
    let header = frame_bytes(&header)
        .map_err(|e| ClientError::Protocol(format!("cannot encode the download header: {e}")))?;
    let part = match &dest {
        DownloadDest::Path(p) => Some(part_path(p)),
        DownloadDest::Writer(_) => None,
    };
    let (mut send, mut recv) = tokio::select! {
        biased;
        _ = cancelled(&mut cancel) => return Err(ClientError::Cancelled),
        streams = open_stream(&shared) => streams?,
    };
    let result = {
        let work = receive(
            &mut send,
            &mut recv,
            header,
            dest,
            &mut progress,
            &shared,
            client.request_timeout(),
        );
        tokio::select! {
            biased;
            _ = cancelled(&mut cancel) => Err(ClientError::Cancelled),
            r = work => r,
        }
    };
    if result.is_err() {
        abort(&mut send, &mut recv);
        if let Some(part) = part {
            let _ = tokio::fs::remove_file(part).await;
        }
    }
    result
}

/// The open destination.
enum Sink {
    File {
        file: tokio::fs::File,
        part: PathBuf,
        path: PathBuf,
    },
    Writer(Box<dyn AsyncWrite + Send + Unpin + 'static>),
}

impl Sink {
    async fn open(dest: DownloadDest) -> Result<Self, ClientError> {
        match dest {
            DownloadDest::Path(path) => {
                let part = part_path(&path);
                let file = tokio::fs::File::create(&part).await.map_err(|e| {
                    ClientError::io(&format!("cannot create {}", part.display()), e)
                })?;
                Ok(Self::File { file, part, path })
            }
            DownloadDest::Writer(w) => Ok(Self::Writer(w)),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let result = match self {
            Self::File { file, .. } => file.write_all(bytes).await,
            Self::Writer(w) => w.write_all(bytes).await,
        };
        result.map_err(|e| ClientError::io("cannot write the download", e))
    }

    async fn complete(self) -> Result<(), ClientError> {
        match self {
            Self::File {
                mut file,
                part,
                path,
            } => {
                file.flush()
                    .await
                    .and(file.sync_all().await)
                    .map_err(|e| ClientError::io(&format!("cannot write {}", part.display()), e))?;
                drop(file);
                tokio::fs::rename(&part, &path).await.map_err(|e| {
                    ClientError::io(&format!("cannot rename to {}", path.display()), e)
                })
            }
            Self::Writer(mut w) => w
                .flush()
                .await
                .map_err(|e| ClientError::io("cannot flush the download", e)),
        }
    }
}

/// Counts, hashes and writes the bytes of a file announced as `total` bytes long.
struct Receiving {
    sink: Sink,
    hasher: Sha256,
    done: u64,
    total: u64,
}

impl Receiving {
    async fn take(
        &mut self,
        bytes: &[u8],
        progress: &mut Option<ProgressFn>,
    ) -> Result<(), ClientError> {
        self.done += bytes.len() as u64;
        if self.done > self.total {
            return Err(ClientError::Protocol(format!(
                "the broker sent more than the announced {} bytes",
                self.total
            )));
        }
        self.hasher.update(bytes);
        self.sink.write(bytes).await?;
        report(progress, self.done, self.total);
        Ok(())
    }
}

async fn receive(
    send: &mut SendStream,
    recv: &mut RecvStream,
    header: Bytes,
    dest: DownloadDest,
    progress: &mut Option<ProgressFn>,
    shared: &Shared,
    outcome_timeout: Duration,
) -> Result<SharedFile, ClientError> {
    if let Err(e) = send.write_chunk(header).await {
        return Err(match e {
            quinn::WriteError::ConnectionLost(_) => shared.wait_closed().await,
            other => ClientError::Io(format!("cannot send the download request: {other}")),
        });
    }
    let _ = send.finish();
    let mut buf = BytesMut::new();
    let file = tokio::time::timeout(outcome_timeout, read_outcome(recv, &mut buf, shared))
        .await
        .map_err(|_| ClientError::Timeout)??;
    let mut rx = Receiving {
        sink: Sink::open(dest).await?,
        hasher: Sha256::new(),
        done: 0,
        total: file.file_size,
    };
    report(progress, 0, rx.total);
    if !buf.is_empty() {
        rx.take(&buf, progress).await?;
    }
    loop {
        match recv.read_chunk(super::CHUNK, true).await {
            Ok(Some(chunk)) => rx.take(&chunk.bytes, progress).await?,
            Ok(None) => break,
            Err(e) => return Err(read_error(e, shared).await),
        }
    }
    if rx.done < rx.total {
        return Err(ClientError::Io(format!(
            "the download of {:?} ended after {} of {} bytes",
            file.file_name, rx.done, rx.total
        )));
    }
    let digest = hex::encode(rx.hasher.finalize());
    if file.sha256.len() == 64 && !file.sha256.eq_ignore_ascii_case(&digest) {
        return Err(ClientError::Io(format!(
            "the download of {:?} has sha256 {digest}, the index says {}",
            file.file_name, file.sha256
        )));
    }
    rx.sink.complete().await?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_path_appends_a_suffix() {
        assert_eq!(
            part_path(Path::new("/tmp/out.bin")),
            PathBuf::from("/tmp/out.bin.part")
        );
        assert_eq!(part_path(Path::new("x")), PathBuf::from("x.part"));
    }
}
