//! uploadGroupSharedFile: header frame, the file's bytes in chunks, end of stream, then the
//! broker's outcome. The outcome is read while the bytes are still going out, so a broker
//! that refuses early (not a member, file too large, not implemented) is heard at once.

use super::source::Opened;
use super::UploadSource;
use super::{abort, cancelled, open_stream, read_outcome, report, ProgressFn, Transfer, CHUNK};
use crate::client::Client;
use crate::error::ClientError;
use bytes::BytesMut;
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::transfer::TransferHeader;
use convoke_protocol::SharedFile;
use quinn::{SendStream, WriteError};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

impl Client {
    /// uploadGroupSharedFile (member): streams `source` to the group's shared files.
    ///
    /// Returns at once with a running [`Transfer`]; await it for the new file's entry
    /// (members receive `uploadFile`). Broker refusals arrive as [`ClientError::Api`] (e.g.
    /// `UploadFileError` for a file over 10 MiB, `MaxLimit` when the group has 10,000 files).
    /// Must be called within a tokio runtime.
    pub fn upload_group_shared_file(
        &self,
        group_id: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> Transfer {
        let client = self.clone();
        let group_id = group_id.to_string();
        Transfer::spawn(move |cancel| upload(client, group_id, source, progress, cancel))
    }
}

enum BodyError {
    /// Reading the source failed or it ended early: the upload is abandoned.
    Source(ClientError),
    /// The stream refused the bytes (the broker stopped it, or the connection is gone).
    Stream(WriteError),
}

enum Step {
    Cancelled,
    Body(Result<(), BodyError>),
    Early(Result<SharedFile, ClientError>),
}

async fn upload(
    client: Client,
    group_id: String,
    source: UploadSource,
    mut progress: Option<ProgressFn>,
    mut cancel: watch::Receiver<bool>,
) -> Result<SharedFile, ClientError> {
    let opened = source.open().await?;
    let shared = client.shared().clone();
    let (mut send, mut recv) = tokio::select! {
        biased;
        _ = cancelled(&mut cancel) => return Err(ClientError::Cancelled),
        streams = open_stream(&shared) => streams?,
    };
    let Opened {
        reader,
        len,
        file_name,
        content_type,
    } = opened;
    let header = frame_bytes(&TransferHeader::Upload {
        group_id,
        file_name: file_name.clone(),
        size: len,
        content_type,
    })
    .map_err(|e| ClientError::Protocol(format!("cannot encode the upload header: {e}")))?;

    let mut buf = BytesMut::new();
    let mut sent = 0u64;
    let step = {
        let body = write_body(&mut send, header, reader, len, &mut progress, &mut sent);
        let outcome = read_outcome(&mut recv, &mut buf, &shared);
        tokio::select! {
            biased;
            _ = cancelled(&mut cancel) => Step::Cancelled,
            b = body => Step::Body(b),
            o = outcome => Step::Early(o),
        }
    };
    let body_error = match step {
        Step::Cancelled => {
            abort(&mut send, &mut recv);
            return Err(ClientError::Cancelled);
        }
        Step::Early(Ok(file)) if sent == len => {
            let _ = send.finish();
            return Ok(file);
        }
        Step::Early(Ok(_)) => {
            abort(&mut send, &mut recv);
            return Err(ClientError::Protocol(format!(
                "the broker accepted {file_name:?} after {sent} of its {len} bytes"
            )));
        }
        Step::Early(Err(e)) => {
            abort(&mut send, &mut recv);
            return Err(e);
        }
        Step::Body(Err(BodyError::Source(e))) => {
            abort(&mut send, &mut recv);
            return Err(e);
        }
        Step::Body(Err(BodyError::Stream(e))) => Some(e),
        Step::Body(Ok(())) => {
            let _ = send.finish();
            None
        }
    };

    // Every byte is out (or the broker stopped taking them): its verdict decides.
    let verdict = tokio::select! {
        biased;
        _ = cancelled(&mut cancel) => {
            abort(&mut send, &mut recv);
            return Err(ClientError::Cancelled);
        }
        v = tokio::time::timeout(client.request_timeout(), read_outcome(&mut recv, &mut buf, &shared)) => v,
    };
    match (verdict, body_error) {
        (Ok(Ok(file)), None) => Ok(file),
        (Ok(Err(e @ ClientError::Api(_))), _) => Err(e),
        (Ok(Err(e)), None) => Err(e),
        (Err(_elapsed), None) => Err(ClientError::Timeout),
        (_, Some(WriteError::ConnectionLost(_))) => Err(shared.wait_closed().await),
        (_, Some(e)) => Err(ClientError::Io(format!(
            "upload of {file_name:?} stopped after {sent} of {len} bytes: {e}"
        ))),
    }
}

async fn write_body(
    send: &mut SendStream,
    header: bytes::Bytes,
    reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    len: u64,
    progress: &mut Option<ProgressFn>,
    sent: &mut u64,
) -> Result<(), BodyError> {
    send.write_chunk(header).await.map_err(BodyError::Stream)?;
    report(progress, 0, len);
    let mut reader = reader.take(len);
    loop {
        let mut chunk = BytesMut::with_capacity(CHUNK);
        let n = reader
            .read_buf(&mut chunk)
            .await
            .map_err(|e| BodyError::Source(ClientError::io("cannot read the upload source", e)))?;
        if n == 0 {
            break;
        }
        send.write_chunk(chunk.freeze())
            .await
            .map_err(BodyError::Stream)?;
        *sent += n as u64;
        report(progress, *sent, len);
    }
    if *sent < len {
        return Err(BodyError::Source(ClientError::Io(format!(
            "the upload source ended after {sent} of the announced {len} bytes"
        ))));
    }
    Ok(())
}
