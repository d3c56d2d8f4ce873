//! The sessions the load generator adds, and what their answers must contain.

use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Sessions and how each system is spoken to.

/// One session as the distributor adds it, plus what its answers must contain.
pub(crate) struct SessionDoc {
    pub(crate) id: String,
    /// The add's body (Grid JSON, or etcd's put request).
    pub(crate) add_body: Vec<u8>,
    /// Must appear in a full GET (the per-add token; the id is checked too).
    pub(crate) token: String,
    /// Must appear in a `/uri` answer.
    pub(crate) uri_marker: String,
    /// etcd: the base64 key, and the base64 value a range must return.
    pub(crate) etcd_key: String,
    pub(crate) etcd_value: String,
}

pub(crate) const CHROME_ARGS: &[&str] = &[
    "--disable-background-networking",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-hang-monitor",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--disable-sync",
    "--enable-automation",
    "--enable-logging",
    "--log-level=0",
    "--no-first-run",
    "--no-service-autorun",
    "--password-store=basic",
    "--remote-debugging-port=0",
    "--test-type=webdriver",
    "--use-mock-keychain",
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1920,1080",
];

/// The session JSON with `@@ID@@`, `@@TOKEN@@` and `@@NODE@@` placeholders, built once per
/// process: building it with serde_json for every request cost the client about 250 µs, more
/// than a server spends answering.
pub(crate) fn session_template(caps_bytes: usize) -> &'static str {
    static TEMPLATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
    let (id, token, node) = ("@@ID@@", "@@TOKEN@@", "@@NODE@@");
    let mut args: Vec<String> = CHROME_ARGS.iter().map(|s| s.to_string()).collect();
    let mut caps = json!({
        "acceptInsecureCerts": false,
        "browserName": "chrome",
        "browserVersion": "126.0.6478.126",
        "chrome": {
            "chromedriverVersion": "126.0.6478.126 (d36ace6122e0a59570e258d82441395206d60e1c-refs/branch-heads/6478@{#1591})",
            "userDataDir": format!("/tmp/.org.chromium.Chromium.{id}")
        },
        "fedcm:accounts": true,
        "goog:chromeOptions": { "debuggerAddress": "localhost:43305" },
        "networkConnectionEnabled": false,
        "pageLoadStrategy": "normal",
        "platformName": "linux",
        "proxy": {},
        "se:bench": token,
        "se:cdp": format!("ws://10.0.0.1:4444/session/{id}/se/cdp"),
        "se:cdpVersion": "126.0.6478.126",
        "se:vnc": format!("ws://10.0.0.1:4444/session/{id}/se/vnc"),
        "se:vncEnabled": true,
        "se:vncLocalAddress": format!("ws://{node}"),
        "setWindowRect": true,
        "strictFileInteractability": false,
        "timeouts": { "implicit": 0, "pageLoad": 300000, "script": 30000 },
        "unhandledPromptBehavior": "dismiss and notify",
        "webauthn:extension:credBlob": true,
        "webauthn:extension:largeBlob": true,
        "webauthn:extension:minPinLength": true,
        "webauthn:extension:prf": true,
        "webauthn:virtualAuthenticators": true
    });
    // Grow to the requested size the way real sessions grow: more browser arguments and prefs.
    let mut n = 0;
    while caps.to_string().len() < caps_bytes {
        args.push(format!(
            "--user-agent-extra-{n}=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"
        ));
        caps["goog:chromeOptions"]["args"] = json!(args);
        n += 1;
    }
    let session = json!({
        "capabilities": caps,
        "sessionId": id,
        "start": "2026-11-23T15:50:11.880917218Z",
        "stereotype": {
            "browserName": "chrome",
            "browserVersion": "126.0",
            "platformName": "linux",
            "se:noVncPort": 7900,
            "se:vncEnabled": true,
            "se:webDriverExecutable": "/usr/bin/chromedriver"
        },
        "uri": format!("http://{node}")
    });
    session.to_string()
    })
}

pub(crate) fn session_doc(
    id: String,
    seq: u64,
    token: String,
    caps_bytes: usize,
    etcd: bool,
) -> SessionDoc {
    let (a, b, c) = ((seq >> 16) & 0xff, (seq >> 8) & 0xff, seq & 0xff);
    let node = format!("10.{a}.{b}.{c}:5555");
    let grid_body = session_template(caps_bytes)
        .replace("@@ID@@", &id)
        .replace("@@TOKEN@@", &token)
        .replace("@@NODE@@", &node)
        .into_bytes();
    let (add_body, etcd_key, etcd_value) = if etcd {
        let key = b64(format!("/sessions/{id}").as_bytes());
        let value = b64(&grid_body);
        let put = format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}").into_bytes();
        (put, key, value)
    } else {
        (grid_body, String::new(), String::new())
    };
    SessionDoc {
        id,
        add_body,
        token: format!("\"{token}\""),
        uri_marker: format!("{node}\""),
        etcd_key,
        etcd_value,
    }
}

/// The token of the pre-loaded session `id`: derived from the id, so a reader (or the ceiling
/// server) knows it without having loaded the session itself.
pub(crate) fn preload_token(id: &str) -> String {
    format!("tok-{id}-fixed")
}

pub(crate) fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn rand_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}
