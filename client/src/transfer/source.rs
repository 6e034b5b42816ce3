//! [`UploadSource`]: what an upload reads from (a file path, bytes in memory, or any
//! `AsyncRead` of a known length), with the name and content type the file is announced
//! under, and the upload id it is resumed by.
//!
//! A resume needs the source from the broker's offset, which may lie before what was
//! already sent (bytes in flight when the connection dropped): files and bytes in memory
//! are sought; a plain reader keeps its last [`REPLAY_BYTES`] in memory to send again.

use super::CHUNK;
use crate::error::ClientError;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt};

type Reader = Box<dyn AsyncRead + Send + Unpin + 'static>;

trait ReadSeek: AsyncRead + AsyncSeek + Send + Unpin {}
impl<T: AsyncRead + AsyncSeek + Send + Unpin> ReadSeek for T {}

/// How many of the last bytes read from a plain reader an upload keeps to send again after
/// a resume. The broker lets at most its per-stream receive window (1 MiB) be in flight
/// beyond what it has written, so the bytes it lost when a connection dropped are always
/// among these.
pub const REPLAY_BYTES: usize = 4 * 1024 * 1024;

enum Kind {
    Path(PathBuf),
    Bytes(Vec<u8>),
    Reader { reader: Reader, len: u64 },
}

/// The bytes of an upload and how the file is named.
///
/// ```no_run
/// # use convoke_client::UploadSource;
/// let from_disk = UploadSource::path("notes/plan.pdf"); // name "plan.pdf", application/pdf
/// let in_memory = UploadSource::bytes(b"hello".to_vec(), "hello.txt").content_type("text/plain");
/// ```
pub struct UploadSource {
    kind: Kind,
    file_name: Option<String>,
    content_type: Option<String>,
    pub(crate) upload_id: Option<u64>,
    pub(crate) resume: bool,
}

/// An opened source, ready to stream.
pub(crate) struct Opened {
    pub(crate) body: Body,
    pub(crate) len: u64,
    pub(crate) file_name: String,
    pub(crate) content_type: String,
}

impl UploadSource {
    /// A file on disk; its name is the path's last component and its content type is
    /// guessed from the extension, unless set.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::of(Kind::Path(path.into()), None)
    }

    /// Any reader that yields exactly `len` bytes (more are ignored; fewer fail the upload).
    /// It is read once: to resume, the last [`REPLAY_BYTES`] read are kept in memory.
    pub fn reader(
        reader: impl AsyncRead + Send + Unpin + 'static,
        len: u64,
        file_name: impl Into<String>,
    ) -> Self {
        let kind = Kind::Reader {
            reader: Box::new(reader),
            len,
        };
        Self::of(kind, Some(file_name.into()))
    }

    /// Bytes already in memory.
    pub fn bytes(data: impl Into<Vec<u8>>, file_name: impl Into<String>) -> Self {
        Self::of(Kind::Bytes(data.into()), Some(file_name.into()))
    }

    fn of(kind: Kind, file_name: Option<String>) -> Self {
        Self {
            kind,
            file_name,
            content_type: None,
            upload_id: None,
            resume: false,
        }
    }

    /// The id the broker keeps this upload under if its connection drops (default: a
    /// random one; [`Transfer::upload_id`](super::Transfer::upload_id) tells it). Choose it
    /// yourself to be able to resume the upload later with [`resume`](Self::resume), e.g.
    /// after the application restarted. Ids are per user: nobody else can resume yours.
    pub fn upload_id(mut self, upload_id: u64) -> Self {
        self.upload_id = Some(upload_id);
        self
    }

    /// Continues the upload `upload_id` that an earlier connection of the same user started
    /// and lost: the broker answers how many bytes it holds durably and only the rest is
    /// sent (this source is sought, or read and skipped, up to there; it must hold the same
    /// file, announced with the same name, size and content type, or the broker refuses
    /// with `RequestParameterError` naming the difference). If that upload had completed,
    /// its entry is the result and nothing is sent; if the broker no longer keeps it
    /// (`files.resume_keep_secs` passed, or it restarted) the whole file is uploaded as a
    /// new one.
    pub fn resume(mut self, upload_id: u64) -> Self {
        self.upload_id = Some(upload_id);
        self.resume = true;
        self
    }

    /// The name the file is shared under.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = Some(name.into());
        self
    }

    /// The MIME type announced (default: guessed from the name's extension, else
    /// `application/octet-stream`).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    pub(crate) async fn open(self) -> Result<Opened, ClientError> {
        let (body, len, default_name): (BodyKind, u64, String) = match self.kind {
            Kind::Path(path) => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| ClientError::io(&format!("cannot open {}", path.display()), e))?;
                let meta = file
                    .metadata()
                    .await
                    .map_err(|e| ClientError::io(&format!("cannot stat {}", path.display()), e))?;
                if !meta.is_file() {
                    return Err(ClientError::Io(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (BodyKind::Seekable(Box::new(file)), meta.len(), name)
            }
            Kind::Bytes(data) => {
                let len = data.len() as u64;
                let cursor = std::io::Cursor::new(data);
                (BodyKind::Seekable(Box::new(cursor)), len, String::new())
            }
            Kind::Reader { reader, len } => {
                let stream = BodyKind::Stream {
                    reader,
                    read: 0,
                    replay: VecDeque::new(),
                    replay_start: 0,
                };
                (stream, len, String::new())
            }
        };
        let file_name = self.file_name.unwrap_or(default_name);
        let content_type = self
            .content_type
            .unwrap_or_else(|| guess_content_type(&file_name).to_string());
        Ok(Opened {
            body: Body {
                kind: body,
                pos: 0,
                len,
            },
            len,
            file_name,
            content_type,
        })
    }
}

/// An upload's bytes, readable from any offset the broker may ask for.
pub(crate) struct Body {
    kind: BodyKind,
    /// The offset of the next byte [`Body::next_chunk`] returns.
    pos: u64,
    len: u64,
}

enum BodyKind {
    /// A file or bytes in memory.
    Seekable(Box<dyn ReadSeek>),
    /// A plain reader, read once.
    Stream {
        reader: Reader,
        /// Bytes taken from the reader.
        read: u64,
        /// The last bytes taken, at most about [`REPLAY_BYTES`], in order.
        replay: VecDeque<Bytes>,
        /// The offset of the first byte in `replay`.
        replay_start: u64,
    },
}

impl Body {
    /// The offset of the next byte to send.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// The next bytes from the current offset (at most a chunk); empty once the declared
    /// length is reached or the source has ended.
    pub(crate) async fn next_chunk(&mut self) -> std::io::Result<Bytes> {
        let want = usize::try_from(self.len.saturating_sub(self.pos))
            .unwrap_or(CHUNK)
            .min(CHUNK);
        if want == 0 {
            return Ok(Bytes::new());
        }
        let chunk = match &mut self.kind {
            BodyKind::Seekable(reader) => read_some(reader, want).await?,
            BodyKind::Stream {
                reader,
                read,
                replay,
                replay_start,
            } => {
                if self.pos < *read {
                    // Sending again what was sent before a resume.
                    replayed(replay, *replay_start, self.pos, want)
                } else {
                    let chunk = read_some(reader, want).await?;
                    *read += chunk.len() as u64;
                    replay.push_back(chunk.clone());
                    let mut held = *read - *replay_start;
                    while let Some(front) = replay.front() {
                        let n = front.len() as u64;
                        if held - n < REPLAY_BYTES as u64 {
                            break;
                        }
                        held -= n;
                        *replay_start += n;
                        replay.pop_front();
                    }
                    chunk
                }
            }
        };
        self.pos += chunk.len() as u64;
        Ok(chunk)
    }

    /// Continues from byte `offset` (where the broker resumed).
    pub(crate) async fn seek(&mut self, offset: u64) -> Result<(), ClientError> {
        if offset > self.len {
            return Err(ClientError::Protocol(format!(
                "the broker resumed at byte {offset} of a {} byte upload",
                self.len
            )));
        }
        match &mut self.kind {
            BodyKind::Seekable(reader) => {
                reader
                    .seek(SeekFrom::Start(offset))
                    .await
                    .map_err(|e| ClientError::io("cannot seek the upload source", e))?;
            }
            BodyKind::Stream {
                reader,
                read,
                replay,
                replay_start,
            } => {
                if offset < *replay_start {
                    return Err(ClientError::Io(format!(
                        "cannot resume the upload at byte {offset}: its source is a stream and \
                         only the bytes from {replay_start} on are still at hand"
                    )));
                }
                // Forward (resuming with a new source): read and skip up to the offset.
                while *read < offset {
                    let want = usize::try_from(offset - *read).unwrap_or(CHUNK).min(CHUNK);
                    let skipped = read_some(reader, want)
                        .await
                        .map_err(|e| ClientError::io("cannot read the upload source", e))?;
                    if skipped.is_empty() {
                        return Err(ClientError::Io(format!(
                            "the upload source ended after {read} bytes, before the resume \
                             offset {offset}"
                        )));
                    }
                    *read += skipped.len() as u64;
                    replay.clear();
                    *replay_start = *read;
                }
            }
        }
        self.pos = offset;
        Ok(())
    }
}

/// Reads what the source has now, at most `want` bytes; empty at its end.
async fn read_some<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    want: usize,
) -> std::io::Result<Bytes> {
    let mut chunk = BytesMut::with_capacity(want);
    (&mut *reader)
        .take(want as u64)
        .read_buf(&mut chunk)
        .await?;
    Ok(chunk.freeze())
}

/// Up to `want` kept bytes from offset `pos` (which is within the kept bytes).
fn replayed(replay: &VecDeque<Bytes>, replay_start: u64, pos: u64, want: usize) -> Bytes {
    let mut at = replay_start;
    for chunk in replay {
        let end = at + chunk.len() as u64;
        if pos < end {
            let from = (pos - at) as usize;
            let to = chunk.len().min(from + want);
            return chunk.slice(from..to);
        }
        at = end;
    }
    Bytes::new()
}

impl fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UploadSource");
        match &self.kind {
            Kind::Path(p) => d.field("path", p),
            Kind::Bytes(b) => d.field("bytes_len", &b.len()),
            Kind::Reader { len, .. } => d.field("reader_len", len),
        };
        d.field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("upload_id", &self.upload_id)
            .field("resume", &self.resume)
            .finish()
    }
}

/// A content type for common extensions; `application/octet-stream` otherwise.
pub(super) fn guess_content_type(file_name: &str) -> &'static str {
    let ext = Path::new(file_name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type("a.PNG"), "image/png");
        assert_eq!(guess_content_type("notes.txt"), "text/plain");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
    }

    #[tokio::test]
    async fn path_source_takes_name_size_and_type_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, b"{\"a\":1}").unwrap();
        let mut opened = UploadSource::path(&path).open().await.unwrap();
        assert_eq!(opened.file_name, "report.json");
        assert_eq!(opened.len, 7);
        assert_eq!(opened.content_type, "application/json");
        let body = opened.body.next_chunk().await.unwrap();
        assert_eq!(&body[..], b"{\"a\":1}");
        assert!(opened.body.next_chunk().await.unwrap().is_empty());

        let err = match UploadSource::path(dir.path()).open().await {
            Err(e) => e,
            Ok(_) => panic!("a directory is not uploadable"),
        };
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let renamed = UploadSource::bytes(vec![1, 2], "x.bin")
            .file_name("y.png")
            .open()
            .await
            .unwrap();
        assert_eq!((renamed.file_name.as_str(), renamed.len), ("y.png", 2));
        assert_eq!(renamed.content_type, "image/png");
    }

    async fn drain(body: &mut Body) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let chunk = body.next_chunk().await.unwrap();
            if chunk.is_empty() {
                return out;
            }
            out.extend_from_slice(&chunk);
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn every_source_continues_from_a_resume_offset() {
        let all = data(300_000);
        // Seekable sources go anywhere.
        let mut body = UploadSource::bytes(all.clone(), "a")
            .open()
            .await
            .unwrap()
            .body;
        drain(&mut body).await;
        body.seek(123_456).await.unwrap();
        assert_eq!(body.pos(), 123_456);
        assert_eq!(drain(&mut body).await, &all[123_456..]);
        assert!(body.seek(300_001).await.is_err(), "past the end");

        // A stream sends again from its kept bytes...
        let reader = std::io::Cursor::new(all.clone());
        let mut body = UploadSource::reader(reader, all.len() as u64, "a")
            .open()
            .await
            .unwrap()
            .body;
        let mut sent = Vec::new();
        while sent.len() < 200_000 {
            sent.extend_from_slice(&body.next_chunk().await.unwrap());
        }
        body.seek(150_000).await.unwrap();
        assert_eq!(drain(&mut body).await, &all[150_000..]);
        // ...and skips forward for a resume with a new source.
        let reader = std::io::Cursor::new(all.clone());
        let mut body = UploadSource::reader(reader, all.len() as u64, "a")
            .open()
            .await
            .unwrap()
            .body;
        body.seek(250_000).await.unwrap();
        assert_eq!(drain(&mut body).await, &all[250_000..]);
    }

    #[tokio::test]
    async fn a_stream_cannot_go_back_past_its_kept_bytes() {
        let len = REPLAY_BYTES + 3 * CHUNK;
        let all = data(len);
        let reader = std::io::Cursor::new(all.clone());
        let mut body = UploadSource::reader(reader, len as u64, "a")
            .open()
            .await
            .unwrap()
            .body;
        assert_eq!(drain(&mut body).await, all);
        let e = body.seek(0).await.unwrap_err();
        assert!(e.to_string().contains("at byte 0"), "{e}");
        // The last REPLAY_BYTES are all still at hand.
        let from = (len - REPLAY_BYTES) as u64;
        body.seek(from).await.unwrap();
        assert_eq!(drain(&mut body).await, &all[from as usize..]);
    }
}
