//! The identity file: what a data dir was created as, so that a drifted setting stops the
//! node instead of silently orphaning data (../shared/design/cluster.md 3.1).
//!
//! `DATA_DIR/cluster/identity` (TOML) is written at the first start with `cluster.enabled`
//! and holds the name, ordinal, role, a random `node_uid`, the shard count, the sorted core
//! members and the shard table. A later start whose name, ordinal, shard count or member
//! list differs is refused with a [`Refused`] naming the setting (the binary exits 2).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::placement::shard_table;
use super::Refused;
use crate::config::ClusterConfig;

/// What a data dir belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `cluster.name` at creation.
    pub name: String,
    /// `cluster.ordinal` at creation.
    pub ordinal: u32,
    /// `core` or `gateway` (informational: a gateway owns no data, so it may change).
    pub role: String,
    /// Random 128-bit id of this data dir, hex: tells two processes claiming one name apart.
    pub node_uid: String,
    /// `cluster.shards` at creation.
    pub shards: u32,
    /// The core members (`name@host:port`), sorted by name.
    pub members: Vec<String>,
    /// Owner of each shard, as an index into `members`.
    pub table: Vec<u16>,
}

/// The identity file's path in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("identity")
}

/// The core members of `cfg` sorted by name, as written (`name@host:port`).
pub(crate) fn sorted_members(cfg: &ClusterConfig) -> Vec<String> {
    let mut members = cfg.parsed_members().unwrap_or_default();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members.iter().map(ToString::to_string).collect()
}

/// Refuses to turn the cluster on for a data dir a single node filled: no identity file
/// yet, and the store already holds groups (`has_groups`). Their ids carry ordinal 0 and
/// their shards would be owned by other nodes, so they would be orphaned silently. Until
/// a migration path exists (ordinal 0 stays reserved for it), such a node does not start.
pub fn refuse_single_node_data(data_dir: &Path, has_groups: bool) -> Result<(), Refused> {
    if !has_groups || path(data_dir).exists() {
        return Ok(());
    }
    Err(Refused::Unsupported {
        setting: "cluster.enabled".to_owned(),
        problem: format!(
            "the data dir {} holds groups of a single node (no cluster identity file {}): \
             with the cluster on, other nodes would own their shards and they would be \
             orphaned. Moving a single node's data into a cluster is not supported yet; \
             keep cluster.enabled = false for this data dir, or start the node on a new one",
            data_dir.display(),
            path(data_dir).display()
        ),
    })
}

/// Refuses to start a cluster node's data dir with the cluster off: an identity file exists
/// and `cluster.enabled` is false. Groups created meanwhile would get ordinal-0 ids, which
/// hash to shards of other nodes once the cluster is back on (orphaned: this node no
/// longer loads them, their owners never had them), and acknowledgements of kept events
/// with such ids would be routed to peers. A cluster's data dir only runs in its cluster.
pub fn refuse_cluster_data_without_cluster(data_dir: &Path) -> Result<(), Refused> {
    let file = path(data_dir);
    if !file.exists() {
        return Ok(());
    }
    Err(Refused::Unsupported {
        setting: "cluster.enabled".to_owned(),
        problem: format!(
            "it is false, and the data dir {} belongs to a cluster node (its cluster identity \
             file {} exists): groups created now would get single-node ids owned by other \
             nodes' shards once the cluster is back on, and be orphaned. Start this data dir \
             with cluster.enabled = true and its [cluster] settings, or start the single \
             node on a new data dir",
            data_dir.display(),
            file.display()
        ),
    })
}

/// Reads the identity of `data_dir`, or creates it from `cfg` at the first start; refuses a
/// start whose settings drifted from it.
pub fn load_or_create(cfg: &ClusterConfig, data_dir: &Path) -> Result<Identity, Refused> {
    let file = path(data_dir);
    let members = sorted_members(cfg);
    let wanted_table = shard_table(cfg.shards, members.len());
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let id: Identity = toml::from_str(&text).map_err(|e| Refused::Identity {
                path: file.clone(),
                problem: format!("it does not parse ({e}); restore it from a backup"),
            })?;
            let drift = |setting: &str, was: String, now: String| Refused::Drift {
                setting: setting.to_owned(),
                was,
                now,
                path: file.clone(),
            };
            if id.name != cfg.name {
                return Err(drift("cluster.name", id.name, cfg.name.clone()));
            }
            if id.ordinal != cfg.ordinal {
                return Err(drift(
                    "cluster.ordinal",
                    id.ordinal.to_string(),
                    cfg.ordinal.to_string(),
                ));
            }
            if id.shards != cfg.shards {
                return Err(drift(
                    "cluster.shards",
                    id.shards.to_string(),
                    cfg.shards.to_string(),
                ));
            }
            // Gateways own no data: their view of the members comes from the core.
            if cfg.role == crate::config::ClusterRole::Core && id.members != members {
                return Err(drift(
                    "cluster.members",
                    format!("{:?}", id.members),
                    format!("{members:?}"),
                ));
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity {
                name: cfg.name.clone(),
                ordinal: cfg.ordinal,
                role: cfg.role.as_str().to_owned(),
                node_uid: format!("{:032x}", rand::random::<u128>()),
                shards: cfg.shards,
                members,
                table: wanted_table,
            };
            write(&file, &id).map_err(|e| Refused::Identity {
                path: file.clone(),
                problem: format!("cannot write it: {e}"),
            })?;
            Ok(id)
        }
        Err(e) => Err(Refused::Identity {
            path: file,
            problem: format!("cannot read it: {e}"),
        }),
    }
}

/// Writes the file durably: temp file, fsync, rename, fsync of the directory.
fn write(file: &Path, id: &Identity) -> std::io::Result<()> {
    let text = toml::to_string(id).map_err(std::io::Error::other)?;
    write_text(
        file,
        "# Written at this node's first start in a cluster; do not edit.\n",
        &text,
    )
}

/// The data dirs (node_uid) this node met each core peer with, and their ordinals, by
/// name: `DATA_DIR/cluster/peer_uids`, written when a core peer's Hello is first accepted.
///
/// A later Hello under that name from another data dir is refused (a copy of the config
/// started on an empty dir would otherwise take the node's shards with none of its data),
/// and so is a gateway claiming a remembered core member's ordinal, even while that member
/// is down (the ids it minted carry that ordinal).
/// **Replacing a node deliberately** (its data dir is lost for good): delete this file on
/// every other node and restart them (or delete that node's entry and restart);
/// they then remember the new data dir at its first Hello.
pub fn peer_uids_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("peer_uids")
}

/// What this node remembers of a core peer, in [`peer_uids_path`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The node_uid of its data dir, at its first accepted Hello.
    pub node_uid: String,
    /// Its `cluster.ordinal` (pinned by its own identity file); absent in a file written
    /// before ordinals were remembered, filled in at its next accepted Hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<u32>,
}

/// An entry of [`peer_uids_path`]: `n2 = "<node_uid>"` as first written, or a table.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Uid(String),
    Peer(KnownPeer),
}

/// Reads [`peer_uids_path`] (empty when it does not exist).
pub fn load_peer_uids(
    data_dir: &Path,
) -> Result<std::collections::BTreeMap<String, KnownPeer>, Refused> {
    let file = peer_uids_path(data_dir);
    let read = |text: &str| -> Result<_, toml::de::Error> {
        let stored: std::collections::BTreeMap<String, Stored> = toml::from_str(text)?;
        Ok(stored
            .into_iter()
            .map(|(name, s)| {
                let known = match s {
                    Stored::Uid(node_uid) => KnownPeer {
                        node_uid,
                        ordinal: None,
                    },
                    Stored::Peer(known) => known,
                };
                (name, known)
            })
            .collect())
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => read(&text).map_err(|e| Refused::Identity {
            path: file,
            problem: format!(
                "it does not parse ({e}); delete it to forget the peers' data dirs \
                 (see identity::peer_uids_path)"
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(Refused::Identity {
            path: file,
            problem: format!("cannot read it: {e}"),
        }),
    }
}

/// Writes [`peer_uids_path`] durably.
pub fn save_peer_uids(
    file: &Path,
    uids: &std::collections::BTreeMap<String, KnownPeer>,
) -> std::io::Result<()> {
    let text = toml::to_string(uids).map_err(std::io::Error::other)?;
    write_text(
        file,
        "# The data dir (node_uid) and ordinal of each core peer, remembered at its first \
         Hello. To replace\n# a node deliberately, delete this file on every other node and \
         restart them.\n",
        &text,
    )
}

fn write_text(file: &Path, header: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(header.as_bytes())?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_single_node_data_dir_with_groups_is_refused_once_not_after_it_has_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            refuse_single_node_data(dir.path(), false).is_ok(),
            "empty store"
        );
        let e = refuse_single_node_data(dir.path(), true).unwrap_err();
        assert!(e.to_string().contains("cluster.enabled"), "{e}");
        assert!(e.to_string().contains("single node"), "{e}");
        std::fs::create_dir_all(dir.path().join("cluster")).unwrap();
        std::fs::write(path(dir.path()), "").unwrap();
        assert!(
            refuse_single_node_data(dir.path(), true).is_ok(),
            "a cluster's own data"
        );
    }

    use super::*;

    /// A cluster node's data dir started with the cluster off is refused, naming the
    /// setting and the identity file; a data dir that never ran clustered is not.
    #[test]
    fn a_cluster_data_dir_with_the_cluster_off_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_cluster_data_without_cluster(dir.path()).is_ok());
        load_or_create(&cfg("n1", 1, &["n1@127.0.0.1:7401"]), dir.path()).unwrap();
        let e = refuse_cluster_data_without_cluster(dir.path()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("cluster.enabled"), "{text}");
        assert!(
            text.contains(&path(dir.path()).display().to_string()),
            "{text}"
        );
    }

    /// Core peers are remembered with their ordinals; a file written before ordinals were
    /// (`n2 = "<uid>"`) still reads.
    #[test]
    fn known_peers_round_trip_with_their_ordinals_and_the_first_format_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = peer_uids_path(dir.path());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "n2 = \"u2\"\n").unwrap();
        let mut known = load_peer_uids(dir.path()).unwrap();
        assert_eq!(
            known["n2"],
            KnownPeer {
                node_uid: "u2".into(),
                ordinal: None
            }
        );
        known.insert(
            "n3".into(),
            KnownPeer {
                node_uid: "u3".into(),
                ordinal: Some(3),
            },
        );
        save_peer_uids(&file, &known).unwrap();
        assert_eq!(load_peer_uids(dir.path()).unwrap(), known);
    }

    fn cfg(name: &str, ordinal: u32, members: &[&str]) -> ClusterConfig {
        ClusterConfig {
            enabled: true,
            name: name.to_owned(),
            ordinal,
            members: members.iter().map(|m| m.to_string()).collect(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn first_start_writes_later_starts_check() {
        let dir = tempfile::tempdir().unwrap();
        let m = ["n2@127.0.0.2:7401", "n1@127.0.0.1:7401"];
        let a = load_or_create(&cfg("n1", 1, &m), dir.path()).unwrap();
        assert_eq!(a.members, vec!["n1@127.0.0.1:7401", "n2@127.0.0.2:7401"]);
        assert_eq!(a.table.len(), 256);
        // Same settings, members in another order: the same identity.
        let b = load_or_create(&cfg("n1", 1, &[m[1], m[0]]), dir.path()).unwrap();
        assert_eq!(a, b);
        for (c, setting) in [
            (cfg("n9", 1, &m), "cluster.name"),
            (cfg("n1", 2, &m), "cluster.ordinal"),
            (cfg("n1", 1, &m[..1]), "cluster.members"),
            (
                ClusterConfig {
                    shards: 64,
                    ..cfg("n1", 1, &m)
                },
                "cluster.shards",
            ),
        ] {
            let e = load_or_create(&c, dir.path()).unwrap_err();
            assert!(e.to_string().contains(setting), "{e}");
        }
    }
}
