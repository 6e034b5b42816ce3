//! The command line: connection options, then one subcommand per API call (the seed's method
//! name in kebab-case, its parameters as kebab-case flags), plus `ping` and `watch`.

use clap::{Args, Parser};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Command-line client of a Convoke broker: one subcommand per group API call.
///
/// Results are printed as JSON on stdout (one line when stdout is not a terminal); a call
/// that returns nothing prints {"ok":true}. Errors go to stderr as
/// `error <code> <NAME>: <message>`. Exit status: 0 success, 1 the broker refused the call
/// (API error), 2 bad usage, 3 connection, TLS, protocol or local I/O problem, 130 a
/// transfer interrupted with Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "convoke-cli", version, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach and authenticate to the broker.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectionArgs {
    /// Broker address as host:port (an IPv6 host in brackets). Repeat it (or give a
    /// comma-separated list) for several nodes of a cluster: the first is tried first, then
    /// the next ones in turn; after a drop the client goes back to the one it was on, then
    /// the next.
    #[arg(
        long,
        env = "CONVOKE_SERVER",
        value_name = "ADDR",
        value_parser = parse_server,
        value_delimiter = ',',
        required = true
    )]
    pub server: Vec<String>,
    /// Token from `convoke token --user NAME`.
    #[arg(long, env = "CONVOKE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// PEM file whose certificates are trusted (the broker's certificate or its CA).
    #[arg(
        long,
        env = "CONVOKE_CA",
        value_name = "PEM",
        required_unless_present_any = ["pin_sha256", "pin_public_key", "system_roots"]
    )]
    pub ca: Option<PathBuf>,
    /// Trust the server certificate with this SHA-256 fingerprint (hex) instead of --ca.
    #[arg(long, env = "CONVOKE_PIN_SHA256", value_name = "HEX")]
    pub pin_sha256: Option<String>,
    /// Trust a server certificate whose public key has this pin (`sha256/<base64>`, as the
    /// broker logs it) instead of --ca; repeat it to accept several keys (key rotation).
    #[arg(long, value_name = "PIN")]
    pub pin_public_key: Vec<String>,
    /// Trust the operating system's root certificates (a broker with a certificate from a
    /// public or company CA) instead of --ca.
    #[arg(long)]
    pub system_roots: bool,
    /// Name the certificate must carry [default: the host of each --server if it is a name, else localhost].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// This device among the user's sessions [default: cli-PID, this process id].
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// Seconds to wait for each response.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Seconds to wait for the connection and handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Do not reconnect when the connection drops (by default `watch` keeps watching across
    /// broker restarts and network loss, and a command whose connection drops waits for the
    /// reconnect up to --timeout). The first connection is tried once either way, within
    /// --connect-timeout.
    #[arg(long)]
    pub no_reconnect: bool,
}

/// `--server`: `host:port`, or `[v6]:port`. A value without a port (or with a bad one) is
/// bad usage, exit 2 naming it, not a failed resolution (exit 3, "invalid socket address").
pub(crate) fn parse_server(text: &str) -> Result<String, String> {
    let hint = "give host:port, e.g. 127.0.0.1:4433 (an IPv6 host in brackets: [::1]:4433)";
    let bad = |what: &str| Err(format!("{text:?} {what}: {hint}"));
    let Some((host, port)) = text.rsplit_once(':').filter(|_| !text.ends_with(']')) else {
        return bad("has no port");
    };
    if host.is_empty() {
        return bad("has no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("is an IPv6 address without brackets, or has no port");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(text.to_owned()),
        _ => bad(&format!("has no valid port ({port:?} is not 1-65535)")),
    }
}

/// A member-attribute map given as `key=value,key2=` or as a JSON object.
pub(crate) type Attributes = BTreeMap<String, String>;

/// Parses `key=value,key2=` (an empty value deletes the key) or a JSON object of strings.
pub(crate) fn parse_attributes(text: &str) -> Result<Attributes, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed)
            .map_err(|e| format!("not a JSON object of strings: {e}"));
    }
    let mut map = Attributes::new();
    for pair in trimmed.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        if key.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        map.insert(key.to_string(), value.to_string());
    }
    if map.is_empty() {
        return Err("no attributes given".to_string());
    }
    Ok(map)
}

/// `--group-id`, the one parameter of many calls.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupId {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
}

/// `--group-id`, `--limit` and `--cursor`: one page of a mute, block or allow list.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupListPage {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
    /// Entries per page, 1-1000.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Cursor from the previous page (the answer's `cursor`; null on the last page).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `--group-id` and `--username`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupUser {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
    /// The user the call is about.
    #[arg(long)]
    pub username: String,
}

/// `--group-id` and a comma-separated user list `--users a,b`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupUsers {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
    /// Users, comma-separated (at most 60).
    #[arg(long, value_delimiter = ',', required = true)]
    pub users: Vec<String>,
}

/// `--group-id` and `--usernames a,b`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupUsernames {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
    /// Users, comma-separated (at most 60).
    #[arg(long, value_delimiter = ',', required = true)]
    pub usernames: Vec<String>,
}

/// `--group-id` and `--invitee` (default: yourself).
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupInvitee {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
    /// The invited user [default: the token's own user].
    #[arg(long)]
    pub invitee: Option<String>,
}

/// `--group-id` and `--applicant`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupApplicant {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
    /// The user who asked to join.
    #[arg(long)]
    pub applicant: String,
}

/// `--group-id` and `--file-id`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GroupFile {
    /// The group's id.
    #[arg(long)]
    pub group_id: String,
    /// The shared file's id.
    #[arg(long)]
    pub file_id: String,
}

pub(crate) use super::commands::Command;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const CONN: [&str; 7] = [
        "convoke-cli",
        "--server",
        "127.0.0.1:7447",
        "--token",
        "t",
        "--ca",
        "cert.pem",
    ];

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(CONN.iter().chain(args))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_group_flags_and_defaults() {
        let cli = parse(&[
            "create-group",
            "--groupname",
            "game night",
            "--invite-need-confirm",
            "false",
            "--members",
            "a,b",
            "--public",
        ])
        .unwrap();
        let Command::CreateGroup(g) = cli.command else {
            panic!("{:?}", cli.command)
        };
        let data = g.into_data();
        assert_eq!(data.groupname, "game night");
        assert_eq!(data.members, ["a", "b"]);
        assert!(data.public && !data.approval && !data.allowinvites);
        assert!(!data.invite_need_confirm);
        assert_eq!(data.maxusers, None);

        let cli = parse(&["create-group", "--groupname", "g", "--maxusers", "500"]).unwrap();
        let Command::CreateGroup(g) = cli.command else {
            panic!()
        };
        let data = g.into_data();
        assert!(data.invite_need_confirm, "the contract's default is true");
        assert!(!data.public && data.members.is_empty());
        assert_eq!(data.maxusers, Some(500));
        assert!(parse(&["create-group", "--groupname", "g", "--public", "maybe"]).is_err());
    }

    #[test]
    fn mute_takes_a_negative_duration_and_a_user_list() {
        let cli = parse(&[
            "mute-group-member",
            "--group-id",
            "7",
            "--username",
            "a,b",
            "--mute-duration",
            "-1",
        ])
        .unwrap();
        match cli.command {
            Command::MuteGroupMember {
                group_id,
                username,
                mute_duration,
            } => {
                assert_eq!(group_id, "7");
                assert_eq!(username, ["a", "b"]);
                assert_eq!(mute_duration, -1);
            }
            other => panic!("{other:?}"),
        }
        let missing = parse(&["mute-group-member", "--group-id", "7", "--username", "a"]);
        assert_eq!(
            missing.unwrap_err().kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    /// A `--server` without a port, with a bad port or an unbracketed IPv6 host is a
    /// usage error naming the value (before, it failed to resolve: exit 3).
    #[test]
    fn a_server_must_be_host_and_port() {
        for good in ["127.0.0.1:4433", "broker.example:443", "[::1]:4433"] {
            assert_eq!(parse_server(good).as_deref(), Ok(good));
        }
        for bad in [
            "127.0.0.42",
            "127.0.0.42:",
            "127.0.0.42:0",
            "127.0.0.42:99999",
            "host:port",
            ":4433",
            "::1",
            "[::1]",
            "",
        ] {
            let e = parse_server(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("host:port"),
                "{e}"
            );
        }
        let cli = Cli::try_parse_from([
            "convoke-cli",
            "--server",
            "127.0.0.42",
            "--token",
            "t",
            "--ca",
            "c",
            "ping",
        ]);
        let e = cli.unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("127.0.0.42"), "{e}");
    }

    /// Several nodes of a cluster: `--server` repeated or comma-separated, in order, each
    /// checked; at least one is required.
    #[test]
    fn several_servers_are_taken_in_order() {
        let parse = |servers: &[&str]| {
            let mut args = vec!["convoke-cli"];
            args.extend(servers);
            args.extend(["--token", "t", "--ca", "c", "ping"]);
            Cli::try_parse_from(args)
        };
        let cli = parse(&[
            "--server",
            "127.0.0.1:4433,127.0.0.2:4433",
            "--server",
            "[::1]:4433",
        ])
        .unwrap();
        assert_eq!(
            cli.conn.server,
            ["127.0.0.1:4433", "127.0.0.2:4433", "[::1]:4433"]
        );
        let e = parse(&["--server", "127.0.0.1:4433,127.0.0.2"]).unwrap_err();
        assert!(e.to_string().contains("127.0.0.2"), "{e}");
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn attributes_parse_from_pairs_and_json() {
        let pairs = parse_attributes("nickname=Al,avatar=").unwrap();
        assert_eq!(pairs.get("nickname").map(String::as_str), Some("Al"));
        assert_eq!(pairs.get("avatar").map(String::as_str), Some(""));
        let json = parse_attributes(r#"{"a":"x,y","b":""}"#).unwrap();
        assert_eq!(json.get("a").map(String::as_str), Some("x,y"));
        assert!(parse_attributes("novalue").is_err());
        assert!(parse_attributes("=v").is_err());
        assert!(parse_attributes(r#"{"a":1}"#).is_err());
        assert!(parse_attributes("").is_err());

        let cli = parse(&[
            "set-group-member-attributes",
            "--group-id",
            "7",
            "--member-attributes",
            "k=v,k2=",
        ])
        .unwrap();
        match cli.command {
            Command::SetGroupMemberAttributes {
                user_id,
                member_attributes,
                ..
            } => {
                assert_eq!(user_id, None);
                assert_eq!(member_attributes.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lists_bools_and_paging() {
        let cli = parse(&["get-group-info", "--group-id", "1,2,3"]).unwrap();
        assert!(matches!(cli.command, Command::GetGroupInfo { group_id } if group_id.len() == 3));
        let cli = parse(&["get-joined-groups", "--need-role"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::GetJoinedGroups {
                need_role: true,
                need_affiliations: false,
                page_num: None,
                page_size: 20,
            }
        ));
        let cli = parse(&["list-group-members", "--group-id", "9"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::ListGroupMembers {
                page_num: 1,
                page_size: 20,
                ..
            }
        ));
        let cli = parse(&[
            "send-group-message",
            "--group-id",
            "9",
            "--payload",
            "hi",
            "--allow-group-ack",
            "true",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::SendGroupMessage {
                allow_group_ack: true,
                ..
            }
        ));
        let cli = parse(&["get-public-groups", "--cursor", "c1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::GetPublicGroups { limit: 20, cursor: Some(ref c) } if c == "c1"
        ));
    }

    #[test]
    fn trust_is_required_and_pin_replaces_ca() {
        let no_trust =
            Cli::try_parse_from(["convoke-cli", "--server", "h:1", "--token", "t", "ping"]);
        if std::env::var_os("CONVOKE_CA").is_none()
            && std::env::var_os("CONVOKE_PIN_SHA256").is_none()
        {
            assert!(no_trust.is_err());
        }
        let pinned = Cli::try_parse_from([
            "convoke-cli",
            "--server",
            "h:1",
            "--token",
            "t",
            "--pin-sha256",
            "ab",
            "ping",
            "--count",
            "3",
        ])
        .unwrap();
        assert!(matches!(pinned.command, Command::Ping { count: 3 }));
    }

    #[test]
    fn every_api_method_has_a_subcommand() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        for request in convoke_protocol::Request::examples() {
            let kebab = kebab(request.method());
            assert!(names.contains(&kebab), "missing subcommand {kebab}");
        }
        for extra in [
            "upload-group-shared-file",
            "download-group-shared-file",
            "watch",
        ] {
            assert!(names.iter().any(|n| n == extra), "missing {extra}");
        }
    }

    fn kebab(camel: &str) -> String {
        let mut out = String::new();
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                out.push('-');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}
