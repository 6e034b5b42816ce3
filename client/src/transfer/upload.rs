//! uploadGroupSharedFile: header frame, the file's bytes in chunks, end of stream, then the
//! broker's outcome. The outcome is read while the bytes are still going out, so a broker
//! that refuses early (not a member, file too large, not implemented) is heard at once.
//!
//! An attempt whose connection is lost is followed by another on the client's next
//! connection with `resume: true`: the broker answers `ResumeAt { offset }` (what it holds
//! durably) and the source is sent from there, or the entry of the upload if it had
//! completed (its final answer was what got lost).

use super::source::{Body, Opened};
use super::UploadSource;
use super::{
    abort, cancelled, open_stream, random_id, read_reply, refused, write_failed, Attempt,
    ProgressFn, Reporter, Retry, Transfer,
};
use crate::client::Client;
use crate::error::ClientError;
use bytes::{Bytes, BytesMut};
use convoke_protocol::codec::frame_bytes;
use convoke_protocol::transfer::{TransferHeader, TransferReply};
use convoke_protocol::SharedFile;
use quinn::{SendStream, WriteError};
use tokio::sync::watch;

impl Client {
    /// uploadGroupSharedFile (member): streams `source` to the group's shared files.
    ///
    /// Returns at once with a running [`Transfer`]; await it for the new file's entry
    /// (members receive `uploadFile`). Broker refusals arrive as [`ClientError::Api`] (e.g.
    /// `UploadFileError` for a file over 10 MiB, `MaxLimit` when the group has 10,000 files).
    /// A lost connection does not end the upload: it resumes on the client's next connection
    /// from the last byte the broker made durable (see [`crate::transfer`]); to resume it
    /// from another client, see [`UploadSource::resume`] and [`Transfer::upload_id`].
    /// Must be called within a tokio runtime.
    pub fn upload_group_shared_file(
        &self,
        group_id: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> Transfer {
        let client = self.clone();
        let group_id = group_id.to_string();
        let upload_id = source.upload_id.unwrap_or_else(random_id);
        Transfer::spawn(Some(upload_id), move |cancel| {
            upload(client, group_id, source, upload_id, progress, cancel)
        })
    }
}

/// What the upload is, for every attempt's header.
struct Upload {
    group_id: String,
    file_name: String,
    len: u64,
    content_type: String,
    upload_id: u64,
}

impl Upload {
    fn header(&self, resume: bool) -> Result<Bytes, ClientError> {
        frame_bytes(&TransferHeader::Upload {
            group_id: self.group_id.clone(),
            file_name: self.file_name.clone(),
            size: self.len,
            content_type: self.content_type.clone(),
            upload_id: self.upload_id,
            resume,
        })
        .map_err(|e| ClientError::Protocol(format!("cannot encode the upload header: {e}")))
    }
}

async fn upload(
    client: Client,
    group_id: String,
    source: UploadSource,
    upload_id: u64,
    progress: Option<ProgressFn>,
    mut cancel: watch::Receiver<bool>,
) -> Result<SharedFile, ClientError> {
    let mut resume = source.resume;
    let Opened {
        mut body,
        len,
        file_name,
        content_type,
    } = source.open().await?;
    let up = Upload {
        group_id,
        file_name,
        len,
        content_type,
        upload_id,
    };
    let mut rep = Reporter::new(progress, len);
    let mut conn = tokio::select! {
        biased;
        _ = cancelled(&mut cancel) => return Err(ClientError::Cancelled),
        conn = client.connection() => conn?,
    };
    let mut retry = Retry::new();
    let what = format!("the upload of {:?}", up.file_name);
    loop {
        let header = up.header(resume)?;
        let from = body.pos();
        let attempt = attempt(
            &client,
            &conn,
            &up,
            header,
            resume,
            &mut body,
            &mut rep,
            &mut cancel,
        )
        .await;
        match attempt {
            Ok(file) => return Ok(file),
            Err(stopped) => {
                tracing::debug!(upload_id, file = %up.file_name, sent = body.pos(), why = ?stopped, "upload interrupted");
                retry.after(stopped, body.pos() > from, client.request_timeout())?;
                resume = true;
                conn = tokio::select! {
                    biased;
                    _ = cancelled(&mut cancel) => return Err(ClientError::Cancelled),
                    conn = retry.next_connection(&client, &what) => conn?,
                };
            }
        }
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
    Early(Result<TransferReply, Attempt>),
}

/// One stream: the header, (on a resume) the broker's offset, the bytes, the verdict.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    client: &Client,
    conn: &quinn::Connection,
    up: &Upload,
    header: Bytes,
    resume: bool,
    body: &mut Body,
    rep: &mut Reporter,
    cancel: &mut watch::Receiver<bool>,
) -> Result<SharedFile, Attempt> {
    let (mut send, mut recv) = tokio::select! {
        biased;
        _ = cancelled(cancel) => return Err(ClientError::Cancelled.into()),
        streams = open_stream(conn) => streams?,
    };
    let mut buf = BytesMut::new();
    let header = if resume {
        // The broker says where to go on before any byte is sent.
        let answer = async {
            send.write_chunk(header).await.map_err(write_failed)?;
            match tokio::time::timeout(client.request_timeout(), read_reply(&mut recv, &mut buf))
                .await
            {
                Ok(reply) => reply,
                Err(_) => Err(Attempt::Lost(
                    "no answer to the resume within the request timeout".into(),
                )),
            }
        };
        let answer = tokio::select! {
            biased;
            _ = cancelled(cancel) => Err(ClientError::Cancelled.into()),
            a = answer => a,
        };
        match answer {
            Ok(TransferReply::ResumeAt { offset }) => {
                if let Err(e) = body.seek(offset).await {
                    abort(&mut send, &mut recv);
                    return Err(e.into());
                }
                tracing::debug!(upload_id = up.upload_id, offset, "upload resumes");
                rep.resumed(offset);
            }
            Ok(TransferReply::Outcome(Ok(file))) => {
                // It had completed; its final answer was what got lost.
                let _ = send.finish();
                return entry(up, file);
            }
            Ok(TransferReply::Outcome(Err(e))) => {
                abort(&mut send, &mut recv);
                return Err(refused(e));
            }
            Err(e) => {
                abort(&mut send, &mut recv);
                return Err(e);
            }
        }
        None
    } else {
        if let Err(e) = body.seek(0).await {
            abort(&mut send, &mut recv);
            return Err(e.into());
        }
        Some(header)
    };

    let step = {
        let bytes = write_body(&mut send, header, body, up.len, rep);
        let outcome = read_reply(&mut recv, &mut buf);
        tokio::select! {
            biased;
            _ = cancelled(cancel) => Step::Cancelled,
            b = bytes => Step::Body(b),
            o = outcome => Step::Early(o),
        }
    };
    let body_error = match step {
        Step::Cancelled => {
            abort(&mut send, &mut recv);
            return Err(ClientError::Cancelled.into());
        }
        Step::Early(Ok(TransferReply::Outcome(Ok(file)))) if body.pos() == up.len => {
            let _ = send.finish();
            return entry(up, file);
        }
        Step::Early(Ok(TransferReply::Outcome(Ok(_)))) => {
            abort(&mut send, &mut recv);
            return Err(ClientError::Protocol(format!(
                "the broker accepted {:?} after {} of its {} bytes",
                up.file_name,
                body.pos(),
                up.len
            ))
            .into());
        }
        Step::Early(Ok(TransferReply::Outcome(Err(e)))) => {
            abort(&mut send, &mut recv);
            return Err(refused(e));
        }
        Step::Early(Ok(TransferReply::ResumeAt { offset })) => {
            abort(&mut send, &mut recv);
            return Err(ClientError::Protocol(format!(
                "the broker sent a resume offset ({offset}) to an upload that did not ask"
            ))
            .into());
        }
        Step::Early(Err(e)) => {
            abort(&mut send, &mut recv);
            return Err(e);
        }
        Step::Body(Err(BodyError::Stream(WriteError::ConnectionLost(e)))) => {
            return Err(Attempt::Lost(e.to_string()));
        }
        Step::Body(Err(BodyError::Source(e))) => {
            abort(&mut send, &mut recv);
            return Err(e.into());
        }
        Step::Body(Err(BodyError::Stream(e))) => Some(e),
        Step::Body(Ok(())) => {
            let _ = send.finish();
            None
        }
    };

    // Every byte is out (or the broker stopped taking them): its verdict decides. No verdict
    // in time is treated like a lost connection: a resume of a completed upload is answered
    // its entry, so asking again never stores the file twice.
    let verdict = tokio::select! {
        biased;
        _ = cancelled(cancel) => {
            abort(&mut send, &mut recv);
            return Err(ClientError::Cancelled.into());
        }
        v = tokio::time::timeout(client.request_timeout(), read_reply(&mut recv, &mut buf)) => v,
    };
    match (verdict, body_error) {
        (Ok(Ok(TransferReply::Outcome(Ok(file)))), None) => entry(up, file),
        (Ok(Ok(TransferReply::Outcome(Err(e)))), _) => Err(refused(e)),
        (Ok(Ok(other)), _) => {
            Err(ClientError::Protocol(format!("unexpected reply to an upload: {other:?}")).into())
        }
        (Ok(Err(e @ (Attempt::Lost(_) | Attempt::Busy(_)))), _) => Err(e),
        (Ok(Err(e)), None) => Err(e),
        (Err(_elapsed), None) => Err(Attempt::Lost(
            "no verdict within the request timeout".into(),
        )),
        (_, Some(e)) => Err(ClientError::Io(format!(
            "upload of {:?} stopped after {} of {} bytes: {e}",
            up.file_name,
            body.pos(),
            up.len
        ))
        .into()),
    }
}

/// The broker's entry for the upload, which must be as long as the file.
fn entry(up: &Upload, file: SharedFile) -> Result<SharedFile, Attempt> {
    if file.file_size != up.len {
        return Err(ClientError::Protocol(format!(
            "the broker recorded {:?} with {} bytes; {} were uploaded",
            up.file_name, file.file_size, up.len
        ))
        .into());
    }
    Ok(file)
}

/// Writes the header (unless already sent) and the bytes from the body's offset to the end.
async fn write_body(
    send: &mut SendStream,
    header: Option<Bytes>,
    body: &mut Body,
    len: u64,
    rep: &mut Reporter,
) -> Result<(), BodyError> {
    if let Some(header) = header {
        send.write_chunk(header).await.map_err(BodyError::Stream)?;
    }
    rep.report(body.pos());
    loop {
        let chunk = body
            .next_chunk()
            .await
            .map_err(|e| BodyError::Source(ClientError::io("cannot read the upload source", e)))?;
        if chunk.is_empty() {
            break;
        }
        send.write_chunk(chunk).await.map_err(BodyError::Stream)?;
        rep.report(body.pos());
    }
    if body.pos() < len {
        return Err(BodyError::Source(ClientError::Io(format!(
            "the upload source ended after {} of the announced {len} bytes",
            body.pos()
        ))));
    }
    Ok(())
}
