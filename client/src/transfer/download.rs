//! downloadGroupSharedFile: header frame and end of stream, then the broker's outcome (the
//! file's entry) followed by the raw bytes. The byte count (and the SHA-256, when the entry
//! carries one) is verified; a path destination is written to `<path>.part` and renamed
//! only when complete. An attempt whose connection is lost is followed by another on the
//! client's next connection that asks for the bytes from what the destination already
//! holds; the hash runs on across attempts.

use super::{
    abort, cancelled, open_stream, read_failed, read_reply, refused, write_failed, Attempt,
    ProgressFn, Reporter, Retry, Transfer,
};
use crate::client::Client;
use crate::error::ClientError;
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::transfer::{TransferHeader, TransferReply};
use convoke_protocol::SharedFile;
use quinn::{RecvStream, SendStream};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
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
    /// [`ClientError::Protocol`]. A lost connection does not end the download: it resumes
    /// on the client's next connection from the bytes already written (see
    /// [`crate::transfer`]). Must be called within a tokio runtime.
    pub fn download_group_shared_file(
        &self,
        group_id: &str,
        file_id: &str,
        secret: Option<&str>,
        dest: impl Into<DownloadDest>,
        progress: Option<ProgressFn>,
    ) -> Transfer {
        self.download_group_shared_file_from(group_id, file_id, secret, 0, dest, progress)
    }

    /// downloadGroupSharedFile from byte `offset` on: `dest` receives only the bytes from
    /// `offset` to the end (e.g. to complete a copy an earlier run left unfinished). The
    /// result is the file's whole entry; progress counts from `offset` (and says it resumed
    /// there). The byte count is verified, the SHA-256 only when `offset` is 0 (the bytes
    /// before it are not seen). An offset past the end of the file is
    /// `RequestParameterError` naming both. Must be called within a tokio runtime.
    pub fn download_group_shared_file_from(
        &self,
        group_id: &str,
        file_id: &str,
        secret: Option<&str>,
        offset: u64,
        dest: impl Into<DownloadDest>,
        progress: Option<ProgressFn>,
    ) -> Transfer {
        let client = self.clone();
        let wanted = Wanted {
            group_id: group_id.to_string(),
            file_id: file_id.to_string(),
            secret: secret.map(str::to_string),
        };
        let dest = dest.into();
        Transfer::spawn(None, move |cancel| {
            download(client, wanted, offset, dest, progress, cancel)
        })
    }
}

/// Which file.
struct Wanted {
    group_id: String,
    file_id: String,
    secret: Option<String>,
}

impl Wanted {
    fn header(&self, offset: u64) -> Result<Bytes, ClientError> {
        frame_bytes(&TransferHeader::Download {
            group_id: self.group_id.clone(),
            file_id: self.file_id.clone(),
            secret: self.secret.clone(),
            offset,
        })
        .map_err(|e| ClientError::Protocol(format!("cannot encode the download header: {e}")))
    }
}

async fn download(
    client: Client,
    wanted: Wanted,
    offset: u64,
    dest: DownloadDest,
    progress: Option<ProgressFn>,
    mut cancel: watch::Receiver<bool>,
) -> Result<SharedFile, ClientError> {
    let part = match &dest {
        DownloadDest::Path(p) => Some(part_path(p)),
        DownloadDest::Writer(_) => None,
    };
    let mut rx = Receiving {
        dest: Some(dest),
        sink: None,
        hasher: (offset == 0).then(Sha256::new),
        start: offset,
        done: offset,
        total: 0,
        first: None,
    };
    let mut rep = Reporter::new(progress, 0);
    let result = run(&client, &wanted, &mut rx, &mut rep, &mut cancel).await;
    if result.is_err() {
        drop(rx);
        if let Some(part) = part {
            let _ = tokio::fs::remove_file(part).await;
        }
    }
    result
}

/// Attempts until the file is in, resuming from what `rx` holds after a lost connection.
async fn run(
    client: &Client,
    wanted: &Wanted,
    rx: &mut Receiving,
    rep: &mut Reporter,
    cancel: &mut watch::Receiver<bool>,
) -> Result<SharedFile, ClientError> {
    let mut conn = tokio::select! {
        biased;
        _ = cancelled(cancel) => return Err(ClientError::Cancelled),
        conn = client.connection() => conn?,
    };
    let mut retry = Retry::new();
    let what = format!("the download of file {:?}", wanted.file_id);
    loop {
        let from = rx.done;
        let header = wanted.header(from)?;
        let attempt = {
            let work = attempt(client, &conn, header, rx, rep);
            tokio::select! {
                biased;
                _ = cancelled(cancel) => Err(Attempt::Fatal(ClientError::Cancelled)),
                r = work => r,
            }
        };
        match attempt {
            Ok(file) => return Ok(file),
            Err(stopped) => {
                tracing::debug!(file = %wanted.file_id, done = rx.done, why = ?stopped, "download interrupted");
                retry.after(stopped, rx.done > from, client.request_timeout())?;
                conn = tokio::select! {
                    biased;
                    _ = cancelled(cancel) => return Err(ClientError::Cancelled),
                    conn = retry.next_connection(client, &what) => conn?,
                };
            }
        }
    }
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

/// Counts, hashes and writes the bytes of a file announced as `total` bytes long, across
/// attempts.
struct Receiving {
    /// Until the first outcome: where to write (the destination is created only then).
    dest: Option<DownloadDest>,
    sink: Option<Sink>,
    /// None when the transfer started past byte 0 (the whole file is never seen).
    hasher: Option<Sha256>,
    /// The offset the transfer started at.
    start: u64,
    /// The offset of the next byte expected (bytes before it are in the destination).
    done: u64,
    total: u64,
    /// The entry of the first attempt; a resume must find the same file.
    first: Option<SharedFile>,
}

impl Receiving {
    /// The broker's entry for this attempt.
    async fn accept(&mut self, file: &SharedFile) -> Result<(), Attempt> {
        match &self.first {
            None => {
                if self.done > file.file_size {
                    return Err(ClientError::Protocol(format!(
                        "asked for the bytes from {} of {:?}, which has {}",
                        self.done, file.file_name, file.file_size
                    ))
                    .into());
                }
                self.total = file.file_size;
                self.first = Some(file.clone());
                if let Some(dest) = self.dest.take() {
                    self.sink = Some(Sink::open(dest).await?);
                }
                Ok(())
            }
            Some(first)
                if first.file_id == file.file_id
                    && first.file_size == file.file_size
                    && first.sha256 == file.sha256 =>
            {
                Ok(())
            }
            Some(first) => Err(ClientError::Io(format!(
                "file {:?} changed while its download was resumed ({} bytes, sha256 {:?} before; {} bytes, sha256 {:?} now)",
                first.file_id, first.file_size, first.sha256, file.file_size, file.sha256
            ))
            .into()),
        }
    }

    async fn take(&mut self, bytes: &[u8], rep: &mut Reporter) -> Result<(), ClientError> {
        if self.done + bytes.len() as u64 > self.total {
            return Err(ClientError::Protocol(format!(
                "the broker sent more than the announced {} bytes",
                self.total
            )));
        }
        let sink = self
            .sink
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("file bytes before the outcome".into()))?;
        sink.write(bytes).await?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        self.done += bytes.len() as u64;
        rep.report(self.done);
        Ok(())
    }
}

/// One stream: the header with the offset, the outcome, the bytes to the end.
async fn attempt(
    client: &Client,
    conn: &quinn::Connection,
    header: Bytes,
    rx: &mut Receiving,
    rep: &mut Reporter,
) -> Result<SharedFile, Attempt> {
    let (mut send, mut recv) = open_stream(conn).await?;
    let result = receive(client, &mut send, &mut recv, header, rx, rep).await;
    if result.is_err() {
        abort(&mut send, &mut recv);
    }
    result
}

async fn receive(
    client: &Client,
    send: &mut SendStream,
    recv: &mut RecvStream,
    header: Bytes,
    rx: &mut Receiving,
    rep: &mut Reporter,
) -> Result<SharedFile, Attempt> {
    send.write_chunk(header).await.map_err(write_failed)?;
    let _ = send.finish();
    let mut buf = BytesMut::new();
    let reply = tokio::time::timeout(client.request_timeout(), read_reply(recv, &mut buf))
        .await
        .map_err(|_| Attempt::Lost("no answer within the request timeout".into()))??;
    let file = match reply {
        TransferReply::Outcome(Ok(file)) => file,
        TransferReply::Outcome(Err(e)) => return Err(refused(e)),
        TransferReply::ResumeAt { offset } => {
            return Err(ClientError::Protocol(format!(
                "the broker sent a resume offset ({offset}) to a download"
            ))
            .into())
        }
    };
    let resumed = rx.first.is_some();
    rx.accept(&file).await?;
    rep.set_total(rx.total);
    if resumed || rx.start > 0 {
        rep.resumed(rx.done);
    } else {
        rep.report(rx.done);
    }
    if !buf.is_empty() {
        rx.take(&buf, rep).await?;
    }
    loop {
        match recv.read_chunk(super::CHUNK, true).await {
            Ok(Some(chunk)) => rx.take(&chunk.bytes, rep).await?,
            Ok(None) => break,
            Err(e) => return Err(read_failed(e)),
        }
    }
    if rx.done < rx.total {
        return Err(ClientError::Io(format!(
            "the download of {:?} ended after {} of {} bytes",
            file.file_name, rx.done, rx.total
        ))
        .into());
    }
    if let Some(hasher) = rx.hasher.take() {
        let digest = hex::encode(hasher.finalize());
        if file.sha256.len() == 64 && !file.sha256.eq_ignore_ascii_case(&digest) {
            return Err(ClientError::Io(format!(
                "the download of {:?} has sha256 {digest}, the index says {}",
                file.file_name, file.sha256
            ))
            .into());
        }
    }
    if let Some(sink) = rx.sink.take() {
        sink.complete().await?;
    }
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
