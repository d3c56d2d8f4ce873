//! The shipped configuration files parse and validate.

use gridraft::config::Settings;

#[test]
fn the_example_and_the_local_three_member_configs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = Settings::from_file(&root.join("config/gridraft.example.toml")).unwrap();
    let defaults = toml::to_string(&Settings::default()).unwrap();
    assert_eq!(
        toml::to_string(&example).unwrap(),
        defaults,
        "the example documents the defaults"
    );
    example.validate().unwrap();
    std::env::set_current_dir(root).unwrap();
    for i in 1..=3 {
        let s = Settings::from_file(&root.join(format!("config/local-3/member-{i}.toml"))).unwrap();
        let r = s.validate().unwrap();
        assert_eq!(r.cluster.id, i);
        assert_eq!(r.cluster.members.len(), 3);
        assert!(r.cluster_secret.is_some());
    }
}

/// The example's keys, `section.key` (top-level keys bare), set or commented out.
fn example_keys(text: &str) -> Vec<String> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = line.split_once(" = ") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                keys.push(format!("{section}{key}"));
            }
        }
    }
    keys
}

fn read(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap()
}

fn serve_command() -> clap::Command {
    use clap::CommandFactory;
    let cli = gridraft::cli::Cli::command();
    cli.find_subcommand("serve").unwrap().clone()
}

#[test]
fn every_serve_flag_has_its_variable_and_sets_the_key_named_like_it() {
    use gridraft::cli::ServeArgs;
    let serve = serve_command();
    let print_config = {
        use clap::CommandFactory;
        gridraft::cli::Cli::command()
            .find_subcommand("print-config")
            .unwrap()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect::<Vec<_>>()
    };
    let mut flags = Vec::new();
    for arg in serve.get_arguments().filter(|a| a.get_id() != "help") {
        let long = arg.get_long().expect("every serve setting is a long flag");
        let env = format!("GRIDRAFT_{}", long.to_uppercase().replace('-', "_"));
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(env.as_str()),
            "--{long}"
        );
        assert!(print_config.contains(&arg.get_id().to_string()), "--{long}");
        flags.push(arg.get_id().to_string());
    }
    assert_eq!(
        flags.len(),
        ServeArgs::KEYS.len() + 1,
        "--config sets no key"
    );
    let example = example_keys(&read("config/gridraft.example.toml"));
    let example_text = read("config/gridraft.example.toml");
    for (field, path) in ServeArgs::KEYS {
        assert!(flags.contains(&field.to_string()), "{field}");
        let segments: Vec<String> = path.iter().map(|s| s.replace('_', "-")).collect();
        let flag = field.replace('_', "-");
        assert!(
            flag == *segments.last().unwrap() || flag == segments.join("-"),
            "--{flag} sets {segments:?}"
        );
        let key = segments.join(".");
        assert!(example.contains(&key), "{key} is not in the example");
        let env = format!("GRIDRAFT_{}", flag.to_uppercase().replace('-', "_"));
        for name in [format!("--{flag}"), env] {
            assert!(
                example_text.contains(&name),
                "the example never names {name}"
            );
        }
    }
}

#[test]
fn every_key_flag_and_variable_the_docs_name_is_accepted() {
    use clap::CommandFactory;
    let example = read("config/gridraft.example.toml");
    let docs = read("docs/configuration.md");

    // Every key of the example, commented out or not, parses (unknown keys are errors).
    let mut seen = std::collections::HashSet::new();
    let mut section = String::new();
    let mut uncommented = String::new();
    for line in example.lines() {
        if line.starts_with('[') {
            section = line.to_owned();
        }
        let bare = line.strip_prefix("# ").unwrap_or(line);
        match bare.split_once(" = ") {
            Some((key, _)) if !key.contains(' ') && seen.insert(format!("{section}{key}")) => {
                uncommented.push_str(bare);
            }
            _ if line.starts_with('[') => uncommented.push_str(line),
            _ => {}
        }
        uncommented.push('\n');
    }
    let all: gridraft::config::Settings = toml::from_str(&uncommented).unwrap();
    assert_eq!(
        all.events.publish_events.as_deref(),
        Some("tcp://event-bus:4442")
    );

    // Every key in the docs' tables is one of the example's.
    let keys = example_keys(&example);
    for line in docs.lines().filter(|l| l.starts_with("| `")) {
        let key = line[3..].split('`').next().unwrap();
        let expanded = match key.split_once("-min/max") {
            Some((stem, _)) => vec![format!("{stem}-min"), format!("{stem}-max")],
            None => vec![key.to_owned()],
        };
        for key in expanded {
            assert!(keys.contains(&key), "docs/configuration.md names {key}");
        }
    }

    // Every flag and variable either file names belongs to some command.
    let mut names = std::collections::HashSet::new();
    let mut commands = vec![gridraft::cli::Cli::command()];
    while let Some(c) = commands.pop() {
        for arg in c.get_arguments() {
            names.extend(arg.get_long().map(|l| format!("--{l}")));
            names.extend(arg.get_env().and_then(|e| e.to_str()).map(String::from));
        }
        commands.extend(c.get_subcommands().cloned());
    }
    for text in [&example, &docs] {
        let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        for word in words {
            let named = (word.starts_with("GRIDRAFT_") && word.len() > "GRIDRAFT_".len())
                || (word.starts_with("--")
                    && word[2..].starts_with(|c: char| c.is_ascii_lowercase()));
            assert!(!named || names.contains(word), "{word} is not accepted");
        }
    }
}

/// `gridraft print-config` with `env` set and `args`, as TOML.
fn print_config(env: &[(&str, &str)], args: &[&str]) -> toml::Table {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gridraft"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("GRIDRAFT_")) {
        cmd.env_remove(name);
    }
    let out = cmd
        .envs(env.iter().copied())
        .arg("print-config")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(std::str::from_utf8(&out.stdout).unwrap()).unwrap()
}

fn lookup<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Value {
    let mut path = key.split('.');
    let mut v = &t[path.next().unwrap()];
    for k in path {
        v = &v[k];
    }
    v
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    // One setting of every section: key, flag, and its values by default, in the file, in the
    // environment and as a flag (as TOML).
    let cases = [
        ("worker-threads", "worker-threads", ["0", "1", "2", "3"]),
        (
            "raft.heartbeat-interval",
            "heartbeat-interval",
            ["\"100ms\"", "\"90ms\"", "\"80ms\"", "\"70ms\""],
        ),
        (
            "grid.write-timeout",
            "write-timeout",
            ["\"10s\"", "\"11s\"", "\"12s\"", "\"13s\""],
        ),
        (
            "events.receive-hwm",
            "events-receive-hwm",
            ["1000", "11", "12", "13"],
        ),
        (
            "http.idle-timeout",
            "idle-timeout",
            ["\"120s\"", "\"121s\"", "\"122s\"", "\"123s\""],
        ),
        (
            "mirror.postgres.sync-timeout",
            "mirror-postgres-sync-timeout",
            ["\"2s\"", "\"3s\"", "\"4s\"", "\"5s\""],
        ),
        (
            "mirror.redis.sync-timeout",
            "mirror-redis-sync-timeout",
            ["\"2s\"", "\"6s\"", "\"7s\"", "\"8s\""],
        ),
        (
            "health.fatal-drain",
            "fatal-drain",
            ["\"3s\"", "\"4s\"", "\"5s\"", "\"6s\""],
        ),
        (
            "disk.min-free-percent",
            "disk-min-free-percent",
            ["5", "6", "7", "8"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gridraft.toml");
    let mut text = String::new();
    let mut section = "";
    for (key, _, [_, value, _, _]) in cases {
        let (sec, name) = key.rsplit_once('.').unwrap_or(("", key));
        if sec != section {
            text.push_str(&format!("[{sec}]\n"));
            section = sec;
        }
        text.push_str(&format!("{name} = {value}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let unquote = |v: &str| v.trim_matches('"').to_owned();
    let env: Vec<(String, String)> = cases
        .iter()
        .map(|(_, flag, v)| {
            let var = format!("GRIDRAFT_{}", flag.to_uppercase().replace('-', "_"));
            (var, unquote(v[2]))
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut flags = vec!["--config".to_owned(), file.to_owned()];
    for (_, flag, v) in cases {
        flags.extend([format!("--{flag}"), unquote(v[3])]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    let layers = [
        (print_config(&[], &[]), 1),
        (print_config(&[], &["--config", file]), 2),
        (print_config(&[("GRIDRAFT_CONFIG", file)], &[]), 2),
        (print_config(&env, &["--config", file]), 3),
        (print_config(&env, &flags), 4),
    ];
    for (shown, layer) in &layers {
        for (key, _, values) in cases {
            let want = values[layer - 1];
            let want: toml::Value = toml::from_str::<toml::Table>(&format!("v = {want}"))
                .unwrap()
                .remove("v")
                .unwrap();
            assert_eq!(lookup(shown, key), &want, "{key} at layer {layer}");
        }
    }

    // `--config` beats `GRIDRAFT_CONFIG`.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "worker-threads = 9\n").unwrap();
    let shown = print_config(
        &[("GRIDRAFT_CONFIG", file)],
        &["--config", other.to_str().unwrap()],
    );
    assert_eq!(shown["worker-threads"].as_integer(), Some(9));
}

/// A bare `gridraft` (how `cargo run` starts it) is `gridraft serve`, environment included: it
/// listens where `GRIDRAFT_LISTEN` says and keeps its data where `GRIDRAFT_DATA_DIR` says.
#[test]
fn a_bare_gridraft_reads_the_environment_like_serve() {
    use std::io::{Read, Write};
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (public, peer) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gridraft"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("GRIDRAFT_")) {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .env("GRIDRAFT_LISTEN", &public)
        .env("GRIDRAFT_PEER_LISTEN", &peer)
        .env("GRIDRAFT_DATA_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let Ok(mut s) = std::net::TcpStream::connect(&public) else {
            return false;
        };
        let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 2")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "no ready member on GRIDRAFT_LISTEN={public}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_some(),
        "nothing written to GRIDRAFT_DATA_DIR"
    );
}
