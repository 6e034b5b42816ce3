//! [`UploadSource`]: what an upload reads from (a file path, or any `AsyncRead` of a known
//! length), with the name and content type the file is announced under.

use crate::error::ClientError;
use std::fmt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncRead;

type Reader = Box<dyn AsyncRead + Send + Unpin + 'static>;

enum Kind {
    Path(PathBuf),
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
}

/// An opened source, ready to stream.
pub(crate) struct Opened {
    pub(crate) reader: Reader,
    pub(crate) len: u64,
    pub(crate) file_name: String,
    pub(crate) content_type: String,
}

impl UploadSource {
    /// A file on disk; its name is the path's last component and its content type is
    /// guessed from the extension, unless set.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self {
            kind: Kind::Path(path.into()),
            file_name: None,
            content_type: None,
        }
    }

    /// Any reader that yields exactly `len` bytes (more are ignored; fewer fail the upload).
    pub fn reader(
        reader: impl AsyncRead + Send + Unpin + 'static,
        len: u64,
        file_name: impl Into<String>,
    ) -> Self {
        Self {
            kind: Kind::Reader {
                reader: Box::new(reader),
                len,
            },
            file_name: Some(file_name.into()),
            content_type: None,
        }
    }

    /// Bytes already in memory.
    pub fn bytes(data: impl Into<Vec<u8>>, file_name: impl Into<String>) -> Self {
        let data = data.into();
        let len = data.len() as u64;
        Self::reader(std::io::Cursor::new(data), len, file_name)
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
        let (reader, len, default_name): (Reader, u64, String) = match self.kind {
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
                (Box::new(file), meta.len(), name)
            }
            Kind::Reader { reader, len } => (reader, len, String::new()),
        };
        let file_name = self.file_name.unwrap_or(default_name);
        let content_type = self
            .content_type
            .unwrap_or_else(|| guess_content_type(&file_name).to_string());
        Ok(Opened {
            reader,
            len,
            file_name,
            content_type,
        })
    }
}

impl fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UploadSource");
        match &self.kind {
            Kind::Path(p) => d.field("path", p),
            Kind::Reader { len, .. } => d.field("reader_len", len),
        };
        d.field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// A content type for common extensions; `application/octet-stream` otherwise.
pub fn guess_content_type(file_name: &str) -> &'static str {
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
    use tokio::io::AsyncReadExt;

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
        let mut body = Vec::new();
        opened.reader.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"{\"a\":1}");

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
}
