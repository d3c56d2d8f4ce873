//! `gridraft backup` and `gridraft restore`: the client side of an online backup, and the
//! seeding of a new cluster's data directories from one. The backup is streamed from the
//! member's peer port straight into a temporary file next to `--out` (never held in memory),
//! fsynced, checked completely, and only then renamed to `--out`.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::{BackupError, BackupHeader};
use crate::cli::{BackupArgs, RestoreArgs};
use crate::config::parse_members;
use crate::peer::ClientError;
use crate::raft::seed::{self, Seed, SeedError};
use crate::store::durable::DataIdentity;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Usage(String),
    #[error("backup from {peer} failed: {source}")]
    Peer { peer: String, source: ClientError },
    #[error("backup from {peer} failed while receiving: {source}")]
    Stream {
        peer: String,
        source: reqwest::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backup just written is unusable, nothing was kept: {0}")]
    Unusable(BackupError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(
        "data directory {0} is not empty: restore seeds the directory of a member of a new \
         cluster; give an empty or missing directory"
    )]
    NotEmpty(PathBuf),
    #[error("seed {path}: {source}")]
    Seed { path: PathBuf, source: SeedError },
}

/// `gridraft backup`: streams a backup from `--peer` into `--out`, atomically.
pub async fn backup_command(args: &BackupArgs) -> Result<(), CommandError> {
    let client = args.member.client().map_err(CommandError::Usage)?;
    let peer = args.member.peer.clone();
    let mut resp = client
        .backup(&peer)
        .await
        .map_err(|source| CommandError::Peer {
            peer: peer.clone(),
            source,
        })?;
    let tmp = temp_path(&args.out);
    let written = async {
        let write = |source| CommandError::Write {
            path: tmp.clone(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(write)?;
        while let Some(chunk) = resp.chunk().await.map_err(|source| CommandError::Stream {
            peer: peer.clone(),
            source,
        })? {
            file.write_all(&chunk).await.map_err(write)?;
        }
        file.flush().await.map_err(write)?;
        file.sync_all().await.map_err(write)?;
        let checked = tmp.clone();
        tokio::task::spawn_blocking(move || super::verify(&checked))
            .await
            .map_err(|e| write(std::io::Error::other(e)))?
            .map_err(CommandError::Unusable)
    }
    .await;
    let header = match written {
        Ok(header) => header,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let out = &args.out;
    std::fs::rename(&tmp, out)
        .and_then(|()| sync_dir(out))
        .map_err(|source| CommandError::Write {
            path: out.clone(),
            source,
        })?;
    println!("{}", summary(out, &header));
    Ok(())
}

/// `gridraft restore`: seeds `--data-dir` from `--from` for member `--id` of a new cluster.
pub fn restore_command(args: &RestoreArgs) -> Result<(), CommandError> {
    let members =
        parse_members(&args.members).map_err(|e| CommandError::Usage(format!("--members: {e}")))?;
    if !members.contains_key(&args.id) {
        return Err(CommandError::Usage(format!(
            "--id {} is not in --members {}",
            args.id, args.members
        )));
    }
    ensure_empty(&args.data_dir)?;
    let (header, map) = super::read(&args.from)?;
    // Every member restored from this file takes the same new id, and no other cluster has it.
    let cluster_id = header.backup_id.clone();
    let cluster_name = args
        .cluster_name
        .clone()
        .unwrap_or_else(|| header.cluster_name.clone());
    let new = Seed {
        identity: DataIdentity {
            cluster: cluster_name.clone(),
            node_id: args.id,
        },
        cluster_id: &cluster_id,
        index: header.index,
        members: &members,
    };
    seed::seed(&args.data_dir, &new, &map).map_err(|source| CommandError::Seed {
        path: args.data_dir.clone(),
        source,
    })?;
    println!(
        "restored {} sessions (log index {}) into {} as member {} of cluster {cluster_name:?}, \
         new cluster id {cluster_id}; start it with `gridraft serve --id {} --members {} \
         --data-dir {} --cluster-name {cluster_name}`",
        header.sessions,
        header.index,
        args.data_dir.display(),
        args.id,
        args.id,
        args.members,
        args.data_dir.display(),
    );
    Ok(())
}

fn ensure_empty(dir: &Path) -> Result<(), CommandError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(CommandError::NotEmpty(dir.to_owned())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CommandError::Write {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// A name in `out`'s directory, so that the rename is atomic.
fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    out.with_file_name(format!(".{name}.{}.partial", uuid::Uuid::new_v4()))
}

/// Makes a rename in `file`'s directory durable.
fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn summary(out: &Path, h: &BackupHeader) -> String {
    format!(
        "wrote {}: {} sessions, log index {}, term {}, from member {} of cluster {:?}{}, taken {}",
        out.display(),
        h.sessions,
        h.index,
        h.term,
        h.member,
        h.cluster_name,
        h.cluster_id
            .as_ref()
            .map(|id| format!(" (id {id})"))
            .unwrap_or_default(),
        h.created,
    )
}
