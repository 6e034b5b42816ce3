//! Runs a parsed command line: connects, performs the one call, prints its result.

use super::args::{Cli, ConnectionArgs};
use super::commands::Command;
use super::output::{self, message_json, ok, to_json};
use super::progress;
use convoke_client::{Client, ClientError, Event, ReconnectPolicy, Transfer, UploadSource};
use futures::StreamExt;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// Connects, runs the command, closes; returns the process's exit status.
pub(crate) async fn run(cli: Cli) -> ExitCode {
    let watching = matches!(cli.command, Command::Watch { .. });
    let client = match connect(&cli.conn, watching).await {
        Ok(client) => client,
        Err(e) => return output::fail(&e),
    };
    let status = match cli.command {
        Command::Watch { count } => watch(&client, count).await,
        Command::UploadGroupSharedFile {
            group_id,
            file,
            file_name,
            content_type,
        } => {
            let mut source = UploadSource::path(file);
            if let Some(name) = file_name {
                source = source.file_name(name);
            }
            if let Some(ct) = content_type {
                source = source.content_type(ct);
            }
            let (bar, callback) = progress::bar("upload");
            let transfer = client.upload_group_shared_file(&group_id, source, callback);
            finish_transfer(transfer, bar).await
        }
        Command::DownloadGroupSharedFile {
            group_id,
            file_id,
            secret,
            output,
        } => {
            let (bar, callback) = progress::bar("download");
            let transfer = client.download_group_shared_file(
                &group_id,
                &file_id,
                secret.as_deref(),
                output,
                callback,
            );
            finish_transfer(transfer, bar).await
        }
        command => match call(&client, command).await {
            Ok(value) => {
                output::print_result(&value);
                ExitCode::SUCCESS
            }
            Err(e) => output::fail(&e),
        },
    };
    client.close().await;
    status
}

async fn connect(conn: &ConnectionArgs, watching: bool) -> Result<Client, ClientError> {
    let mut builder = Client::builder()
        .servers(conn.server.clone())
        .token(conn.token.clone())
        .device_id(
            conn.device_id
                .clone()
                .unwrap_or_else(|| format!("cli-{}", std::process::id())),
        )
        .request_timeout(Duration::from_secs(conn.timeout))
        .connect_timeout(Duration::from_secs(conn.connect_timeout));
    if let Some(name) = &conn.server_name {
        builder = builder.server_name(name);
    }
    // Pins win over a CA file, a CA file over the system roots (the builder's order).
    if let Some(pin) = &conn.pin_sha256 {
        builder = builder.pin_sha256(pin.clone());
    }
    for pin in &conn.pin_public_key {
        builder = builder.pin_public_key(pin.clone());
    }
    if let Some(ca) = &conn.ca {
        builder = builder.ca_file(ca.clone());
    }
    if conn.system_roots {
        builder = builder.system_roots();
    }
    if !watching {
        builder = builder.ignore_events();
    }
    if conn.no_reconnect {
        builder = builder.reconnect(ReconnectPolicy::disabled());
    }
    builder.connect().await
}

async fn finish_transfer(transfer: Transfer, bar: Option<indicatif::ProgressBar>) -> ExitCode {
    let cancel = transfer.cancel_handle();
    let mut transfer = std::pin::pin!(transfer);
    let result = tokio::select! {
        r = &mut transfer => r,
        _ = tokio::signal::ctrl_c() => {
            cancel.cancel();
            transfer.await
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(file) => {
            output::print_result(&to_json(&file));
            ExitCode::SUCCESS
        }
        Err(e) => output::fail(&e),
    }
}

async fn watch(client: &Client, count: Option<u64>) -> ExitCode {
    let mut events = client.events();
    let mut seen = 0u64;
    loop {
        if count.is_some_and(|n| seen >= n) {
            return ExitCode::SUCCESS;
        }
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Push(push)) => {
                    seen += 1;
                    if !output::print_line(&output::push_json(&push)) {
                        return ExitCode::SUCCESS;
                    }
                }
                // Connection states go to stderr: stdout stays one JSON push per line.
                Some(Event::Connection(state)) => output::connection_state(&state),
                Some(_) => {}
                None => {
                    let why = client.closed().await;
                    return match &why {
                        ClientError::Closed { code: Some(0), .. } => ExitCode::SUCCESS,
                        // A refused token is 1 (the broker refused), as at the start.
                        _ => output::fail(&why),
                    };
                }
            },
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        }
    }
}

/// Whose id to use when a flag defaults to the caller.
fn me(client: &Client, given: Option<String>) -> String {
    given.unwrap_or_else(|| client.user_id().to_string())
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Performs one request-response call and renders its result.
async fn call(c: &Client, command: Command) -> Result<Value, ClientError> {
    use Command as C;
    Ok(match command {
        C::Ping { count } => {
            let mut rtts = Vec::new();
            for _ in 0..count {
                rtts.push(c.ping().await?.as_secs_f64() * 1000.0);
            }
            let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rtts.iter().copied().fold(0.0, f64::max);
            let avg = rtts.iter().sum::<f64>() / rtts.len().max(1) as f64;
            json!({ "count": rtts.len(), "rtt_ms": rtts, "min_ms": min, "avg_ms": avg, "max_ms": max })
        }
        C::CreateGroup(args) => to_json(&c.create_group(args.into_data()).await?),
        C::DestroyGroup(g) => done(c.destroy_group(&g.group_id).await?),
        C::GetGroupInfo { group_id } => {
            output::group_info_json(&c.get_group_info(&strs(&group_id)).await?)
        }
        C::ModifyGroup {
            group_id,
            group_name,
            description,
            ext,
        } => done(
            c.modify_group(
                &group_id,
                group_name.as_deref(),
                description.as_deref(),
                ext.as_deref(),
            )
            .await?,
        ),
        C::ChangeGroupOwner {
            group_id,
            new_owner,
        } => done(c.change_group_owner(&group_id, &new_owner).await?),
        C::ListGroupMembers {
            group_id,
            page_num,
            page_size,
        } => to_json(&c.list_group_members(&group_id, page_num, page_size).await?),
        C::GetGroupAdmin(g) => to_json(&c.get_group_admin(&g.group_id).await?),
        C::SetGroupAdmin(a) => done(c.set_group_admin(&a.group_id, &a.username).await?),
        C::RemoveGroupAdmin(a) => done(c.remove_group_admin(&a.group_id, &a.username).await?),
        C::InviteUsersToGroup(a) => to_json(
            &c.invite_users_to_group(&a.group_id, &strs(&a.users))
                .await?,
        ),
        C::AcceptGroupInvite(a) => {
            let invitee = me(c, a.invitee);
            done(c.accept_group_invite(&a.group_id, &invitee).await?)
        }
        C::RejectGroupInvite(a) => {
            let invitee = me(c, a.invitee);
            done(c.reject_group_invite(&a.group_id, &invitee).await?)
        }
        C::JoinGroup { group_id, message } => to_json(&c.join_group(&group_id, &message).await?),
        C::AcceptGroupJoinRequest(a) => done(
            c.accept_group_join_request(&a.group_id, &a.applicant)
                .await?,
        ),
        C::RejectGroupJoinRequest {
            group_id,
            applicant,
            reason,
        } => done(
            c.reject_group_join_request(&group_id, &applicant, &reason)
                .await?,
        ),
        C::LeaveGroup(g) => done(c.leave_group(&g.group_id).await?),
        C::RemoveGroupMember(a) => done(c.remove_group_member(&a.group_id, &a.username).await?),
        C::RemoveGroupMembers(a) => {
            done(c.remove_group_members(&a.group_id, &strs(&a.users)).await?)
        }
        C::MuteGroupMember {
            group_id,
            username,
            mute_duration,
        } => to_json(
            &c.mute_group_member(&group_id, &strs(&username), mute_duration)
                .await?,
        ),
        C::UnmuteGroupMember { group_id, username } => {
            done(c.unmute_group_member(&group_id, &strs(&username)).await?)
        }
        C::GetGroupMutelistPage(g) => {
            let (mutes, cursor) = c
                .get_group_mutelist_page(&g.group_id, g.limit, g.cursor.as_deref())
                .await?;
            json!({ "mutes": to_json(&mutes), "cursor": cursor })
        }
        C::GetGroupMutelist(g) => to_json(&c.get_group_mutelist(&g.group_id).await?),
        C::IsInGroupMutelist(g) => to_json(&c.is_in_group_mutelist(&g.group_id).await?),
        C::DisableSendGroupMsg(g) => done(c.disable_send_group_msg(&g.group_id).await?),
        C::EnableSendGroupMsg(g) => done(c.enable_send_group_msg(&g.group_id).await?),
        C::BlockGroupMember(a) => done(c.block_group_member(&a.group_id, &a.username).await?),
        C::BlockGroupMembers(a) => done(
            c.block_group_members(&a.group_id, &strs(&a.usernames))
                .await?,
        ),
        C::UnblockGroupMember(a) => done(c.unblock_group_member(&a.group_id, &a.username).await?),
        C::UnblockGroupMembers(a) => done(
            c.unblock_group_members(&a.group_id, &strs(&a.usernames))
                .await?,
        ),
        C::GetGroupBlocklistPage(g) => {
            let (users, cursor) = c
                .get_group_blocklist_page(&g.group_id, g.limit, g.cursor.as_deref())
                .await?;
            json!({ "users": users, "cursor": cursor })
        }
        C::GetGroupBlocklist(g) => to_json(&c.get_group_blocklist(&g.group_id).await?),
        C::AddUsersToGroupAllowlist(a) => done(
            c.add_users_to_group_allowlist(&a.group_id, &strs(&a.users))
                .await?,
        ),
        C::RemoveGroupAllowlistMember {
            group_id,
            user_name,
        } => done(
            c.remove_group_allowlist_member(&group_id, &user_name)
                .await?,
        ),
        C::GetGroupAllowlistPage(g) => {
            let (users, cursor) = c
                .get_group_allowlist_page(&g.group_id, g.limit, g.cursor.as_deref())
                .await?;
            json!({ "users": users, "cursor": cursor })
        }
        C::GetGroupAllowlist(g) => to_json(&c.get_group_allowlist(&g.group_id).await?),
        C::IsInGroupAllowlist {
            group_id,
            user_name,
        } => {
            let user = me(c, user_name);
            to_json(&c.is_in_group_allowlist(&group_id, &user).await?)
        }
        C::FetchGroupAnnouncement(g) => to_json(&c.fetch_group_announcement(&g.group_id).await?),
        C::UpdateGroupAnnouncement {
            group_id,
            announcement,
        } => done(
            c.update_group_announcement(&group_id, &announcement)
                .await?,
        ),
        C::DeleteGroupSharedFile(f) => {
            done(c.delete_group_shared_file(&f.group_id, &f.file_id).await?)
        }
        C::GetGroupSharedFilelist {
            group_id,
            page_num,
            page_size,
        } => to_json(
            &c.get_group_shared_filelist(&group_id, page_num, page_size)
                .await?,
        ),
        C::SetGroupMemberAttributes {
            group_id,
            user_id,
            member_attributes,
        } => {
            let user = me(c, user_id);
            done(
                c.set_group_member_attributes(&group_id, &user, member_attributes)
                    .await?,
            )
        }
        C::GetGroupMemberAttributes { group_id, user_id } => {
            let user = me(c, user_id);
            to_json(&c.get_group_member_attributes(&group_id, &user).await?)
        }
        C::GetGroupMembersAttributes {
            group_id,
            user_ids,
            keys,
        } => to_json(
            &c.get_group_members_attributes(&group_id, &strs(&user_ids), &strs(&keys))
                .await?,
        ),
        C::GetJoinedGroups {
            page_num,
            page_size,
            need_affiliations,
            need_role,
        } => {
            let detailed = need_affiliations || need_role;
            let page_num = page_num.unwrap_or(if detailed { 0 } else { 1 });
            to_json(
                &c.get_joined_groups(page_num, page_size, need_affiliations, need_role)
                    .await?,
            )
        }
        C::GetPublicGroups { limit, cursor } => {
            let (groups, cursor) = c.get_public_groups(limit, cursor.as_deref()).await?;
            json!({ "groups": to_json(&groups), "cursor": cursor })
        }
        C::BlockGroupMessages(g) => done(c.block_group_messages(&g.group_id).await?),
        C::UnblockGroupMessages(g) => done(c.unblock_group_messages(&g.group_id).await?),
        C::GetGroupMsgReadUser {
            group_id,
            msg_id,
            limit,
            cursor,
        } => to_json(
            &c.get_group_msg_read_user(&group_id, &msg_id, limit, cursor.as_deref())
                .await?,
        ),
        C::SendGroupMessage {
            group_id,
            payload,
            allow_group_ack,
        } => to_json(
            &c.send_group_message(&group_id, payload, allow_group_ack)
                .await?,
        ),
        C::AckGroupMessage { group_id, msg_id } => {
            done(c.ack_group_message(&group_id, &msg_id).await?)
        }
        C::GetGroupMessages {
            group_id,
            before,
            after,
            limit,
        } => {
            let messages = c
                .get_group_messages(&group_id, before, after, limit)
                .await?;
            Value::Array(messages.iter().map(message_json).collect())
        }
        C::Watch { .. } | C::UploadGroupSharedFile { .. } | C::DownloadGroupSharedFile { .. } => {
            return Err(ClientError::Protocol(
                "internal: streaming command dispatched as a call".to_string(),
            ))
        }
    })
}

fn done((): ()) -> Value {
    ok()
}
