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
