//! Settings: defaults, precedence, validation and every problem reported at once.

use super::*;

#[test]
fn defaults_are_a_valid_single_member() {
    let r = Settings::default().validate().unwrap();
    assert!(r.cluster.members.is_empty());
    assert_eq!(r.listen.port(), 5556);
    assert_eq!(r.cluster.advertise_peer, "127.0.0.1:7556");
}

#[test]
fn every_problem_is_reported_at_once() {
    let s = Settings {
        listen: "nope".into(),
        members: "1=a:1,2=b:2".into(),
        id: 3,
        worker_threads: MAX_WORKER_THREADS + 1,
        grid: GridSettings {
            read_mode: "sometimes".into(),
            write_timeout: "soon".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let ConfigError::Invalid(problems) = s.validate().unwrap_err() else {
        panic!("expected Invalid");
    };
    let text = problems.join("\n");
    for needle in [
        "listen",
        "id: member 3",
        "read-mode",
        "write-timeout",
        "cluster-secret",
        "worker-threads",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
}

#[test]
fn the_body_limit_is_bounded_on_both_sides() {
    for (bytes, ok) in [
        (65_535, false),
        (65_536, true),
        (16 << 20, true),
        ((16 << 20) + 1, false),
    ] {
        let s = Settings {
            grid: GridSettings {
                max_body_bytes: bytes,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(s.validate().is_ok(), ok, "max-body-bytes = {bytes}");
    }
}

#[test]
fn the_other_input_limits_are_bounded() {
    let grid = |f: fn(&mut GridSettings)| {
        let mut g = GridSettings::default();
        f(&mut g);
        Settings {
            grid: g,
            ..Default::default()
        }
        .validate()
    };
    let r = grid(|_| {}).unwrap();
    assert_eq!(r.grid.max_body_bytes, 1 << 20);
    assert_eq!(r.grid.session_limits.max_session_id_bytes, 1024);
    assert_eq!(r.grid.session_limits.max_node_uri_bytes, 4096);
    assert_eq!(r.grid.session_limits.max_record_bytes, 1 << 20);
    assert!(grid(|g| g.max_record_bytes = 8 << 20).is_ok());
    for (bad, key) in [
        (
            grid(|g| g.max_record_bytes = (8 << 20) + 1),
            "max-record-bytes",
        ),
        (grid(|g| g.max_session_id_bytes = 0), "max-session-id-bytes"),
        (
            grid(|g| g.max_node_uri_bytes = 1 << 20),
            "max-node-uri-bytes",
        ),
    ] {
        let Err(ConfigError::Invalid(problems)) = bad else {
            panic!("{key} out of range was accepted");
        };
        assert!(problems.join("\n").contains(key), "{problems:?}");
    }
}

#[test]
fn http_timeouts_and_caps_are_checked() {
    let s: Settings = toml::from_str(
        "[http]\nheader-read-timeout = \"0s\"\nidle-timeout = \"soon\"\nmax-connections = 0\n",
    )
    .unwrap();
    let ConfigError::Invalid(problems) = s.validate().unwrap_err() else {
        panic!("expected Invalid");
    };
    let text = problems.join("\n");
    for needle in [
        "http.header-read-timeout: must be above zero",
        "http.idle-timeout",
        "http.max-connections: must be at least 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    let r = Settings::default().validate().unwrap();
    assert_eq!(r.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(r.http.body_read_timeout, Duration::from_secs(30));
    assert_eq!(r.http.idle_timeout, Duration::from_secs(120));
    assert_eq!(
        (r.http.max_connections, r.http.peer_max_connections),
        (10_000, 1024)
    );
}

#[test]
fn members_and_durations_parse() {
    let m = parse_members("1=127.0.0.1:7556, 2=host:7557").unwrap();
    assert_eq!(m[&2], "host:7557");
    assert!(parse_members("1=x").is_err());
    assert!(parse_members("1=a:1,1=b:2").is_err());
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("1h").is_err());
}

#[test]
fn toml_keys_are_kebab_case_and_unknown_keys_fail() {
    let s: Settings = toml::from_str(
        "id = 2\npeer-listen = \"127.0.0.1:7557\"\n[grid]\nread-mode = \"leader\"\n",
    )
    .unwrap();
    assert_eq!(s.id, 2);
    assert!(s.validate().unwrap().cluster.read_from_leader);
    let s: Settings = toml::from_str("worker-threads = 1\n").unwrap();
    assert_eq!(s.validate().unwrap().worker_threads, 1);
    assert!(toml::from_str::<Settings>("bogus = 1").is_err());
}

#[test]
fn event_bus_limits_default_and_are_validated() {
    let s: Settings =
        toml::from_str("[events]\npublish-events = \"tcp://bus:4442\"\nreceive-hwm = 50\n")
            .unwrap();
    let events = s.validate().unwrap().events.unwrap();
    assert_eq!(events.max_frame_bytes, 1 << 20);
    assert_eq!(events.receive_hwm, 50);
    for (frame, hwm) in [
        (65_535, 1),
        ((16 << 20) + 1, 1),
        (1 << 20, 0),
        (1 << 20, 100_001),
    ] {
        let mut s = Settings::default();
        s.events.max_frame_bytes = frame;
        s.events.receive_hwm = hwm;
        let ConfigError::Invalid(problems) = s.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("events."), "{problems:?}");
    }
}

#[test]
fn print_config_redacts_the_secret() {
    let s = Settings {
        cluster_secret: Some("hunter2".into()),
        ..Default::default()
    };
    let text = s.to_redacted_toml();
    assert!(!text.contains("hunter2"));
    assert!(text.contains("<redacted>"));
}

#[test]
fn each_part_gets_its_settings_from_its_section() {
    let s: Settings = toml::from_str(
        "id = 2\nmembers = \"1=a:1,2=b:2\"\ncluster-secret = \"sixteen-bytes-ok\"\ncluster-name = \"c\"\n\
         [raft]\nheartbeat-interval = \"50ms\"\nelection-timeout-min = \"300ms\"\n\
         election-timeout-max = \"600ms\"\nsnapshot-after-entries = 7\nsnapshot-after-bytes = 9\n\
         keep-entries-after-snapshot = 8\n\
         [grid]\nwrite-timeout = \"3s\"\nread-mode = \"leader\"\nmax-pending-reads = 5\n\
         max-body-bytes = 70000\n\
         [events]\npublish-events = \"tcp://bus:4442\"\nregistration-secret = \"r\"\n\
         [http]\nmax-connections = 3\n\
         [mirror.redis]\nurl = \"redis://cache\"\nmode = \"sync\"\n",
    )
    .unwrap();
    let r = s.validate().unwrap();
    let c = &r.cluster;
    assert_eq!((c.id, c.advertise_peer.as_str()), (2, "b:2"));
    assert_eq!(c.write_timeout, Duration::from_secs(3));
    assert!(c.read_from_leader);
    assert_eq!((c.max_pending_reads, c.max_pending_writes), (5, 10_000));
    assert_eq!(c.election_timeout_max, Duration::from_millis(600));
    let raft = &r.raft.openraft;
    assert_eq!(raft.cluster_name, "c");
    assert_eq!(
        (
            raft.heartbeat_interval,
            raft.election_timeout_min,
            raft.election_timeout_max
        ),
        (50, 300, 600)
    );
    assert_eq!(
        raft.snapshot_policy,
        openraft::SnapshotPolicy::LogsSinceLast(7)
    );
    assert_eq!(raft.max_in_snapshot_log_to_keep, 8);
    raft.clone().validate().unwrap();
    assert_eq!(r.raft.retry.first, Duration::from_millis(50));
    assert_eq!(r.raft.retry.cap, Duration::from_millis(300));
    assert_eq!(r.raft.snapshot_after_bytes, 9);
    assert_eq!(r.grid.max_body_bytes, 70_000);
    assert_eq!(r.http.max_connections, 3);
    let events = r.events.as_ref().unwrap();
    assert_eq!(events.publish_events, "tcp://bus:4442");
    assert_eq!(events.registration_secret, "r");
    assert_eq!(r.mirrors.len(), 1);
    assert_eq!(r.mirrors[0].mode, crate::mirror::MirrorMode::Sync);
    assert!(
        !format!("{r:?}").contains("\"r\""),
        "the event secret is redacted"
    );
}

#[test]
fn the_reconciler_is_on_with_an_event_bus_and_off_without_unless_set() {
    let without_bus = Settings::default().validate().unwrap();
    assert_eq!(without_bus.reconcile, None);

    let s: Settings = toml::from_str(
        "[events]\npublish-events = \"tcp://bus:4442\"\nregistration-secret = \"r\"\n",
    )
    .unwrap();
    let on = s.validate().unwrap().reconcile.unwrap();
    assert_eq!(on.interval, Duration::from_secs(30));
    assert_eq!(on.grace, Duration::from_secs(60));
    assert_eq!(on.node_down_after, Duration::from_secs(300));
    assert!(!on.dry_run);
    assert_eq!(on.registration_secret, "r");

    let s: Settings = toml::from_str(
        "[events]\npublish-events = \"tcp://bus:4442\"\n[reconcile]\nenabled = false\n",
    )
    .unwrap();
    assert_eq!(s.validate().unwrap().reconcile, None);

    let s: Settings = toml::from_str(
        "[reconcile]\nenabled = true\ninterval = \"2s\"\ngrace = \"5s\"\nnode-down-after = \"10s\"\ndry-run = true\n",
    )
    .unwrap();
    let forced = s.validate().unwrap().reconcile.unwrap();
    assert_eq!(forced.interval, Duration::from_secs(2));
    assert!(forced.dry_run);
    assert_eq!(forced.registration_secret, "");
}

#[test]
fn bad_reconcile_durations_are_reported_with_their_keys() {
    let s: Settings = toml::from_str(
        "[reconcile]\nenabled = true\ninterval = \"50ms\"\ngrace = \"soon\"\nnode-down-after = \"10ms\"\n",
    )
    .unwrap();
    let Err(ConfigError::Invalid(problems)) = s.validate() else {
        panic!("bad durations accepted");
    };
    let text = problems.join("\n");
    for key in [
        "reconcile.interval",
        "reconcile.grace",
        "reconcile.node-down-after",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
}

fn three_members(secret: Settings) -> Settings {
    Settings {
        members: "1=a:1,2=b:2,3=c:3".into(),
        ..secret
    }
}

fn problems_of(s: &Settings) -> String {
    match s.validate() {
        Err(ConfigError::Invalid(problems)) => problems.join("\n"),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn a_cluster_secret_shorter_than_sixteen_bytes_is_refused_by_value_or_file() {
    let short = three_members(Settings {
        cluster_secret: Some("change-me".into()),
        ..Default::default()
    });
    let text = problems_of(&short);
    assert!(
        text.contains("cluster-secret: the cluster secret is 9 bytes; at least 16 are required"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "fifteen-bytes!!\n").unwrap();
    let from_file = three_members(Settings {
        cluster_secret_file: Some(path.clone()),
        ..Default::default()
    });
    let text = problems_of(&from_file);
    assert!(
        text.contains("cluster-secret-file: the cluster secret is 15 bytes"),
        "{text}"
    );
    std::fs::write(&path, "sixteen-bytes-ok\n").unwrap();
    assert!(from_file.validate().is_ok());
}

#[test]
fn a_secret_file_readable_by_group_or_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "a-secret-long-enough-to-pass").unwrap();
    let s = three_members(Settings {
        cluster_secret_file: Some(path.clone()),
        ..Default::default()
    });
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warnings = s.validate().unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("readable by its group or by others (mode 644)")),
        "{warnings:?}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(s.validate().unwrap().warnings, Vec::<String>::new());
}

#[test]
fn an_event_bus_without_a_registration_secret_is_warned_about() {
    let mut s = Settings::default();
    s.events.publish_events = Some("tcp://bus:4442".into());
    s.events.subscribe_events = Some("tcp://bus:4443".into());
    let warnings = s.validate().unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("configured without a registration secret")),
        "{warnings:?}"
    );
    s.events.registration_secret = Some("grid-secret".into());
    assert_eq!(s.validate().unwrap().warnings, Vec::<String>::new());
}

#[test]
fn a_mirror_ca_file_is_for_rediss_urls_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "PEM").unwrap();
    let problems = |toml: &str| match toml::from_str::<Settings>(toml).unwrap().validate() {
        Ok(r) => Ok(r.mirrors),
        Err(e) => Err(e.to_string()),
    };
    let ca_path = ca.display();
    let ok = problems(&format!(
        "[mirror.redis]\nurl = \"rediss://cache:6380\"\nca-file = \"{ca_path}\"\n"
    ))
    .unwrap();
    assert_eq!(ok[0].ca_file.as_deref(), Some(ca.as_path()));
    for (toml, expected) in [
        (
            format!("[mirror.redis]\nurl = \"redis://cache\"\nca-file = \"{ca_path}\"\n"),
            "mirror.redis.ca-file: needs a rediss:// URL",
        ),
        (
            "[mirror.redis]\nurl = \"rediss://cache\"\nca-file = \"/nowhere/ca.pem\"\n".into(),
            "mirror.redis.ca-file: /nowhere/ca.pem",
        ),
        (
            format!("[mirror.postgres]\nurl = \"postgres://db/s\"\nca-file = \"{ca_path}\"\n"),
            "sslrootcert",
        ),
    ] {
        let error = problems(&toml).unwrap_err();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn peer_tls_takes_all_three_files_and_makes_the_cluster_secret_optional() {
    let parse = |toml: &str| toml::from_str::<Settings>(toml).unwrap().validate();
    let members = "id = 1\nmembers = \"1=a:7556,2=b:7556,3=c:7556\"\n";
    let r = parse(&format!(
        "{members}[peer-tls]\ncert-file = \"m.crt\"\nkey-file = \"m.key\"\nca-file = \"ca.pem\"\n"
    ))
    .expect("three members with peer TLS and no secret");
    let files = r.peer_tls.expect("peer TLS on");
    assert_eq!(
        files.client_ca.as_deref(),
        Some(std::path::Path::new("ca.pem"))
    );
    assert_eq!(r.cluster_secret, None);
    let error = parse(members).unwrap_err().to_string();
    assert!(error.contains("unless peer-tls is configured"), "{error}");
    let error = parse(&format!(
        "{members}cluster-secret = \"0123456789abcdef\"\n[peer-tls]\ncert-file = \"m.crt\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("peer-tls needs all of cert-file, key-file and ca-file"),
        "{error}"
    );
}

#[test]
fn a_member_without_a_leader_waits_for_the_latest_election_before_calling_itself_cut_off() {
    // openraft starts an election once the leader lease (election-timeout-max) and a random
    // election timeout (up to election-timeout-max) have passed, checked every 1.5 heartbeat
    // intervals. A member that called itself cut off before then refused reads and writes for
    // an election that was about to give it a leader (seen as `no quorum` after a leader kill).
    for (hb, min, max) in [("100ms", "500ms", "1s"), ("50ms", "300ms", "600ms")] {
        let s = Settings {
            raft: RaftSettings {
                heartbeat_interval: hb.into(),
                election_timeout_min: min.into(),
                election_timeout_max: max.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = s.validate().unwrap();
        let hb = parse_duration(hb).unwrap();
        let max = parse_duration(max).unwrap();
        let latest_election = max * 2 + hb * 3 / 2;
        assert!(
            r.cluster.cut_off_after >= latest_election + max / 2,
            "{:?} leaves no room after the latest election start {latest_election:?}",
            r.cluster.cut_off_after
        );
    }
}
