//! Strata's chaos harness: real `strata node` processes on loopback ([`cluster`]), clients that
//! record every operation ([`workload`], [`history`]), a nemesis that throws faults at random
//! moments ([`nemesis`]), an operator that answers them as a person would ([`operator`]; with
//! automatic failover the cluster's controller does most of that, and the harness learns who
//! leads from the nodes, [`observer`]), and a checker that reads the whole history
//! ([`check`]). [`run`] ties them together.

pub mod admin;
pub mod check;
pub mod client;
pub mod cluster;
pub mod explain;
pub mod firewall;
pub mod history;
pub mod links;
pub mod membership;
pub mod nemesis;
pub mod observer;
pub mod operator;
pub mod probe;
pub mod proxy;
pub mod recorder;
pub mod report;
pub mod run;
pub mod timeline;
pub mod workload;
