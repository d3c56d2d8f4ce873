//! openraft's own storage test suite, run against the sled log store and state machine.

use gridraft::raft::durable::DataIdentity;
use gridraft::raft::log_store::LogStore;
use gridraft::raft::state_machine::StateMachine;
use gridraft::raft::{open_storage, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let identity = DataIdentity {
            cluster: "suite".into(),
            node_id: 0,
        };
        let (_storage, log, sm) = open_storage(dir.path(), &identity).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_storage_passes_the_openraft_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}
