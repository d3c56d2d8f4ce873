//! The Java side of the differential event tests: a real Selenium `event-bus` and a real
//! `sessions` server (`LocalSessionMap`) subscribed to it, started once per test binary (both
//! through `common::java::JavaProcess`, so no JVM outlives the binary).

use std::path::Path;

use tokio::sync::OnceCell;

use crate::common::free_port;
use crate::common::java::JavaProcess;
use crate::{bus, SECRET};

pub struct JavaWorld {
    /// The bus's XPUB (`--publish-events`): subscribers connect here.
    pub publish: u16,
    /// The bus's XSUB (`--subscribe-events`): publishers connect here.
    pub subscribe: u16,
    /// The Java `sessions` server's HTTP port.
    pub sessions: u16,
    _bus: JavaProcess,
    pub server: JavaProcess,
}

static JAVA: OnceCell<JavaWorld> = OnceCell::const_new();

impl JavaWorld {
    /// Callers have checked `deps::java()`, which gave them `jar`.
    pub async fn shared(jar: &Path) -> &'static JavaWorld {
        JAVA.get_or_init(|| JavaWorld::start(jar)).await
    }

    async fn start(jar: &Path) -> JavaWorld {
        let (publish, subscribe, sessions) = (free_port(), free_port(), free_port());
        let bus = bus::java_bus(jar, publish, subscribe, free_port()).await;
        let args: Vec<String> = vec![
            "sessions".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            sessions.to_string(),
            "--publish-events".into(),
            format!("tcp://127.0.0.1:{publish}"),
            "--subscribe-events".into(),
            format!("tcp://127.0.0.1:{subscribe}"),
            "--bind-bus".into(),
            "false".into(),
            "--registration-secret".into(),
            SECRET.into(),
        ];
        let server = JavaProcess::start(jar, "sessions", &args, sessions, "/readyz").await;
        JavaWorld {
            publish,
            subscribe,
            sessions,
            _bus: bus,
            server,
        }
    }
}
