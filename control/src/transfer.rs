//! Planned leader transfer (`POST /admin/leader/transfer {"to": NAME}`), as Klustron's
//! `transfer_leader` and Valkey's `FAILOVER` do it, without losing a write: the data leader
//! stops taking commands (they answer `-TRYAGAIN`), waits until the target holds durably
//! every record it holds (bounded by [`CATCH_UP_LIMIT`]; an error if not reached, and the
//! leader serves again), then commits `Transfer` through the controller. The target
//! promotes itself at the next epoch as an appointed member does; the old leader, fenced by
//! that promotion, follows it.

use std::time::Duration;

use std::sync::Arc;
use strata_core::cluster::{AdminError, Role};

use strata_core::controller::{ClusterState, Command, JobKind, MemberKind};
use strata_core::{Lsn, PartitionId};
use strata_shard::monotonic_ms;

use crate::roles::Control;
use crate::wire::{Request, Response};

/// How long the leader waits, writes paused, for the target to hold everything.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);
/// How often it compares the target's durable records with its own meanwhile.
const CATCH_UP_POLL: Duration = Duration::from_millis(2);

impl Control {
    /// `POST /admin/leader/transfer`: starts a transfer job on the data leader (asking it
    /// when this node does not lead) and answers its id at once.
    pub(crate) async fn start_transfer(self: &Arc<Self>, to: &str) -> Result<u64, AdminError> {
        let controller = self.controller().ok_or_else(|| {
            AdminError::controller_unavailable(
                "leader transfer needs a cluster with automatic failover",
            )
        })?;
        let state = controller.state();
        let leader = state
            .data_leader
            .clone()
            .ok_or_else(|| AdminError::controller_unavailable("no leader"))?;
        if leader != controller.identity.name {
            let request = Request::TransferLeadership { to: to.to_string(), job: true };
            let response = self.ask_leader(&state, &leader, &request).await?;
            return response
                .job_id
                .ok_or_else(|| AdminError::controller_unavailable("the leader started no job"));
        }
        self.check_transfer(&leader, to)?;
        let record = self.job_record(JobKind::Transfer, to, "commands paused");
        let id = self.start_job(record).await?;
        let control = Arc::clone(self);
        let (leader, to) = (leader.clone(), to.to_string());
        tokio::spawn(async move {
            let outcome = control.transfer_from_here(&leader, &to).await;
            control.finish_job(id, outcome.err().map(|error| error.message)).await;
        });
        Ok(id)
    }

    /// Transfers without a job of its own (a removal of the leader, itself a job), waiting
    /// until the controller committed it.
    pub(crate) async fn transfer_leadership(&self, to: &str) -> Result<(), AdminError> {
        let Some(controller) = self.controller() else {
            return Err(AdminError::controller_unavailable("no controller here"));
        };
        let state = controller.state();
        let Some(leader) = state.data_leader.clone() else {
            return Err(AdminError::controller_unavailable("the cluster has no leader"));
        };
        if leader == controller.identity.name {
            return self.transfer_from_here(&leader, to).await;
        }
        let request = Request::TransferLeadership { to: to.to_string(), job: false };
        self.ask_leader(&state, &leader, &request).await.map(|_| ())
    }

    /// Sends `request` to the data leader `leader`.
    async fn ask_leader(
        &self,
        state: &ClusterState,
        leader: &str,
        request: &Request,
    ) -> Result<Response, AdminError> {
        let Some(record) = state.members.get(leader) else {
            return Err(AdminError::controller_unavailable("the leader is not a member"));
        };
        match self.dialer.call(&record.peer_address, request).await {
            Ok(response) => response.into_result(),
            Err(error) => Err(AdminError::leader_unreachable(&error.to_string())),
        }
    }

    /// Answers `TransferLeadership` from another member: with `job`, starts one and answers
    /// its id; without, answers once the transfer is committed.
    pub(crate) async fn answer_transfer(self: &Arc<Self>, to: &str, job: bool) -> Response {
        if job {
            return match self.start_transfer(to).await {
                Ok(id) => Response { job_id: Some(id), ..Response::default() },
                Err(error) => Response::error(&error),
            };
        }
        match self.transfer_leadership(to).await {
            Ok(()) => Response::default(),
            Err(error) => Response::error(&error),
        }
    }

    /// What makes a transfer to `to` impossible before anything pauses.
    fn check_transfer(&self, leader: &str, to: &str) -> Result<(), AdminError> {
        let controller = self.controller().expect("checked by the caller");
        let state = controller.state();
        let target = state.members.get(to).ok_or_else(|| AdminError::node_missing(to))?;
        if to == leader {
            return Err(AdminError::controller_refused(&format!("{to} leads already")));
        }
        if target.kind != MemberKind::Voter {
            return Err(AdminError::controller_refused(&format!("{to} is a learner")));
        }
        if !state.partitions.iter().all(|partition| partition.in_sync.iter().any(|name| name == to))
        {
            let reason = format!(
                "{to} is not in the in-sync set of every partition yet: it may lack acknowledged \
                 writes"
            );
            return Err(AdminError::controller_refused(&reason));
        }
        if self.role() != Role::Leader {
            return Err(AdminError::controller_unavailable("this node is not leading yet"));
        }
        Ok(())
    }

    async fn transfer_from_here(&self, leader: &str, to: &str) -> Result<(), AdminError> {
        self.check_transfer(leader, to)?;
        let controller = self.controller().expect("checked above");
        let address = controller.state().members[to].peer_address.clone();
        let paused_at = monotonic_ms();
        self.pause_serving(true);
        tracing::info!(to, "leader transfer: commands paused until the target holds everything");
        let outcome = self.hand_over(to, &address).await;
        match &outcome {
            Ok(()) => {
                // The controller names the target now: lease renewals fail, and this node
                // serves nothing until the target's promotion makes it follow.
                self.set_transferring(false);
                tracing::info!(
                    to,
                    paused_ms = monotonic_ms() - paused_at,
                    "leader transfer committed"
                );
                let text = format!("leadership transferred to {to}");
                self.events.record(crate::events::EventKind::Failover, text);
            }
            Err(error) => {
                tracing::warn!(%error, to, "leader transfer failed: this node serves again");
                let text = format!("leader transfer to {to} failed: {}", error.message);
                self.events.record(crate::events::EventKind::Refusal, text);
                self.pause_serving(false);
            }
        }
        outcome
    }

    /// With commands paused: waits for the target to catch up, then commits the transfer.
    async fn hand_over(&self, to: &str, address: &str) -> Result<(), AdminError> {
        self.wait_until_holds_everything(to, address).await?;
        self.note_progress(&format!("{to} holds everything: committing the transfer")).await;
        self.propose_anywhere(Command::Transfer { to: to.to_string() }).await
    }

    async fn wait_until_holds_everything(&self, to: &str, address: &str) -> Result<(), AdminError> {
        let started = tokio::time::Instant::now();
        loop {
            let reports = self.handle.report().await;
            // The target must be in the set this leader recorded on every partition: a set
            // change still in flight would make the target's promotion fail its
            // compare-and-set.
            let recorded = reports.iter().all(|report| {
                let set = report.in_sync.as_ref();
                set.is_some_and(|set| set.members.iter().any(|member| member.name == to))
            });
            let own = durable_by_partition(
                reports.iter().map(|report| (report.partition, report.durable_lsn)),
            );
            let theirs = match self.dialer.call(address, &Request::ReplicationState {}).await {
                Ok(response) if response.error_code == 0 => {
                    durable_by_partition(response.partitions.iter().map(|partition| {
                        (PartitionId(partition.partition), Lsn(partition.durable_lsn))
                    }))
                }
                Ok(response) => {
                    return Err(AdminError::promotion_failed(to, &response.error_message))
                }
                Err(error) => return Err(AdminError::promotion_failed(to, &error.to_string())),
            };
            if recorded && own == theirs {
                return Ok(());
            }
            if started.elapsed() > CATCH_UP_LIMIT {
                let reason = format!(
                    "it did not catch up within {CATCH_UP_LIMIT:?} (it holds {theirs:?}, the \
                     leader {own:?})"
                );
                return Err(AdminError::promotion_failed(to, &reason));
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// Stops serving key commands on this leader (they answer `-TRYAGAIN`), or lets it serve
    /// again once its lease is next renewed.
    fn pause_serving(&self, paused: bool) {
        self.set_transferring(paused);
        self.handle.shared.set_lease_deadline(if paused { 0 } else { monotonic_ms() });
    }
}

fn durable_by_partition(
    reports: impl Iterator<Item = (PartitionId, Lsn)>,
) -> std::collections::BTreeMap<u32, u64> {
    reports.map(|(partition, lsn)| (partition.0, lsn.0)).collect()
}
