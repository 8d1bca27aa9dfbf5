//! Strata's core: identifiers, the record and frame formats, the RESP codec, commands and the
//! keyspace state machine. Nothing here does I/O; clocks are passed in as parameters. The one
//! piece of C (`c/long_double.c`) is arithmetic: INCRBYFLOAT in the C library's long double.

pub mod auth;
pub mod cluster;
pub mod command;
pub mod controller;
pub mod float;
pub mod frame;
pub mod glob;
pub mod handshake;
pub mod ids;
pub mod keyspace;
pub mod partition;
pub mod peer;
pub mod record;
pub mod replication;
pub mod resp;
pub mod slot;
pub mod slot_map;

pub use ids::{Epoch, Lsn, PartitionId, ShardId, Slot};
