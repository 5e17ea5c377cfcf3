//! openraft's storage conformance suite against the redb log store and the state machine.

#![allow(clippy::result_large_err)] // the error type is fixed by openraft's StoreBuilder
use caplab_node::store;
use caplab_node::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, store::LogStore, store::StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, store::LogStore, store::StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::IO {
            source: openraft::StorageIOError::write(openraft::AnyError::new(&e)),
        })?;
        let (log, sm) = store::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}
