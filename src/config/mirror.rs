//! `[mirror.postgres]` and `[mirror.redis]`, resolved into the mirrors' own [`MirrorConfig`]s
//! (see `crate::mirror` and docs/mirrors.md).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::parse_duration;
use crate::mirror::{MirrorConfig, MirrorKind, MirrorMode};

/// `[mirror.postgres]` and `[mirror.redis]` (see `docs/mirrors.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct MirrorsSettings {
    pub postgres: MirrorSettings,
    pub redis: MirrorSettings,
}

/// One mirror; it is enabled when `url` or `url-file` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct MirrorSettings {
    /// Connection URL (`postgres://...`, `redis://...`). It may carry a password: prefer
    /// `url-file` or the environment.
    pub url: Option<String>,
    /// File holding the URL.
    pub url_file: Option<PathBuf>,
    /// `async` (Grid writes never wait) or `sync` (the leader waits up to `sync-timeout`).
    pub mode: String,
    pub sync_timeout: String,
    /// Redis over TLS (`rediss://`): the CA that signed the server's certificate (PEM). Postgres
    /// takes `sslmode` and `sslrootcert` in its URL instead, as libpq does.
    pub ca_file: Option<PathBuf>,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        MirrorSettings {
            url: None,
            url_file: None,
            ca_file: None,
            mode: "async".into(),
            sync_timeout: "2s".into(),
        }
    }
}

impl MirrorsSettings {
    /// Checks both sections; the result holds the configured mirrors only.
    pub(super) fn resolve(&self, problems: &mut Vec<String>) -> Vec<MirrorConfig> {
        let mut out = Vec::new();
        for (kind, m) in [
            (MirrorKind::Postgres, &self.postgres),
            (MirrorKind::Redis, &self.redis),
        ] {
            let key = format!("mirror.{}", kind.name());
            let url = match (&m.url, &m.url_file) {
                (Some(u), _) => Some(u.trim().to_owned()),
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(u) if !u.trim().is_empty() => Some(u.trim().to_owned()),
                    Ok(_) => {
                        problems.push(format!("{key}.url-file: {} is empty", path.display()));
                        None
                    }
                    Err(e) => {
                        problems.push(format!("{key}.url-file: read {}: {e}", path.display()));
                        None
                    }
                },
                (None, None) => None,
            };
            let mode = match m.mode.as_str() {
                "async" => MirrorMode::Async,
                "sync" => MirrorMode::Sync,
                other => {
                    problems.push(format!(
                        "{key}.mode: {other:?} is neither \"async\" nor \"sync\""
                    ));
                    MirrorMode::Async
                }
            };
            let sync_timeout = parse_duration(&m.sync_timeout).unwrap_or_else(|e| {
                problems.push(format!("{key}.sync-timeout: {e}"));
                Duration::ZERO
            });
            let Some(url) = url else { continue };
            if MirrorKind::from_url(&url) != Some(kind) {
                // The URL is not echoed: it may carry a password.
                problems.push(format!(
                    "{key}.url: must start with {}",
                    match kind {
                        MirrorKind::Postgres => "postgres:// or postgresql://",
                        MirrorKind::Redis => "redis:// or rediss://",
                    }
                ));
                continue;
            }
            if let Some(ca) = &m.ca_file {
                if kind == MirrorKind::Postgres {
                    problems.push(format!(
                        "{key}.ca-file: Postgres takes its CA in the URL \
                         (?sslmode=verify-full&sslrootcert=/path/ca.crt)"
                    ));
                } else if !url.to_ascii_lowercase().starts_with("rediss://") {
                    problems.push(format!(
                        "{key}.ca-file: needs a rediss:// URL (Redis over TLS)"
                    ));
                } else if let Err(e) = std::fs::metadata(ca) {
                    problems.push(format!("{key}.ca-file: {}: {e}", ca.display()));
                }
            }
            out.push(MirrorConfig {
                kind,
                url,
                mode,
                sync_timeout,
                ca_file: m.ca_file.clone(),
            });
        }
        out
    }
}
