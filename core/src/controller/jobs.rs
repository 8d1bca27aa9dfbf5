//! Long operations the controller keeps a record of (Klustron's async jobs): a planned
//! transfer, a removal, a member joining (until it is in sync; a learner: caught up).
//! Transfers and removals run one at a time; a join runs beside them, one per member. A job
//! is started and finished by commands, so its record survives a change of the controller's
//! leader and of the data leader; the member running it is named, so that when that member
//! is lost its running jobs can be failed.

use std::collections::BTreeMap;

use super::{ClusterState, Effect, Refusal};

/// Finished jobs kept, at most; the oldest go first.
pub const FINISHED_JOBS_KEPT: usize = 64;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Transfer,
    Remove,
    Join,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// One job, as the controller keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    pub kind: JobKind,
    /// The member the job is about (the transfer's target, the member removed).
    pub subject: String,
    /// The member running it.
    pub runner: String,
    pub state: JobState,
    /// The last step reached, in words.
    pub progress: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Wall-clock milliseconds the proposer read when it started and finished the job.
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// Drawn at random by the runner for each start, so that a start proposed again is
    /// recognised as the same one and no other (0 in records from before it existed).
    #[serde(default)]
    pub token: u64,
}

impl ClusterState {
    /// The id a new job would get: one above every id given so far.
    #[must_use]
    pub fn next_job_id(&self) -> u64 {
        self.jobs.keys().next_back().map_or(1, |last| last + 1)
    }

    pub(super) fn start_job(&mut self, id: u64, record: JobRecord) -> Result<Vec<Effect>, Refusal> {
        self.tag()?;
        if let Some(existing) = self.jobs.get(&id) {
            // A runner that could not learn whether its start committed (the controller's
            // leader failed meanwhile) proposes it again: the same start is the same job.
            if same_start(existing, &record) {
                return Ok(Vec::new());
            }
            return Err(Refusal::BadSettings { reason: format!("job {id} exists already") });
        }
        let conflicts = |job: &JobRecord| match (record.kind, job.kind) {
            (JobKind::Join, JobKind::Join) => job.subject == record.subject,
            (JobKind::Join, _) | (_, JobKind::Join) => false,
            _ => true,
        };
        let mut running = self.jobs.iter().filter(|(_, job)| job.state == JobState::Running);
        if let Some((running, _)) = running.find(|(_, job)| conflicts(job)) {
            return Err(Refusal::Busy { job: *running });
        }
        self.jobs.insert(id, JobRecord { state: JobState::Running, error: None, ..record });
        Ok(Vec::new())
    }

    pub(super) fn advance_job(
        &mut self,
        id: u64,
        progress: String,
    ) -> Result<Vec<Effect>, Refusal> {
        let job = self.running_job(id)?;
        job.progress = progress;
        Ok(Vec::new())
    }

    pub(super) fn finish_job(
        &mut self,
        id: u64,
        error: Option<String>,
        at_ms: u64,
    ) -> Result<Vec<Effect>, Refusal> {
        // The same end proposed again (its first proposal's outcome was unknown) changes
        // nothing; any other end of a finished job is refused.
        let repeated = self.jobs.get(&id).is_some_and(|job| {
            job.state != JobState::Running && job.finished_ms == Some(at_ms) && job.error == error
        });
        if repeated {
            return Ok(Vec::new());
        }
        let job = self.running_job(id)?;
        job.state = if error.is_some() { JobState::Failed } else { JobState::Done };
        job.error = error;
        job.finished_ms = Some(at_ms);
        self.forget_old_jobs();
        Ok(Vec::new())
    }

    fn running_job(&mut self, id: u64) -> Result<&mut JobRecord, Refusal> {
        match self.jobs.get_mut(&id) {
            Some(job) if job.state == JobState::Running => Ok(job),
            Some(_) => Err(Refusal::BadSettings { reason: format!("job {id} has finished") }),
            None => Err(Refusal::BadSettings { reason: format!("no job {id}") }),
        }
    }

    fn forget_old_jobs(&mut self) {
        let finished: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.state != JobState::Running)
            .map(|(id, _)| *id)
            .collect();
        let excess = finished.len().saturating_sub(FINISHED_JOBS_KEPT);
        for id in &finished[..excess] {
            self.jobs.remove(id);
        }
    }

    /// Running jobs of `runner` (to fail when it is lost).
    #[must_use]
    pub fn running_jobs_of(&self, runner: &str) -> Vec<u64> {
        running(&self.jobs).filter(|(_, job)| job.runner == runner).map(|(id, _)| *id).collect()
    }
}

/// Whether `record` is the start that made `existing`: the same token (never 0), runner,
/// kind, subject and start time.
fn same_start(existing: &JobRecord, record: &JobRecord) -> bool {
    record.token != 0
        && existing.token == record.token
        && existing.runner == record.runner
        && existing.kind == record.kind
        && existing.subject == record.subject
        && existing.started_ms == record.started_ms
}

fn running(jobs: &BTreeMap<u64, JobRecord>) -> impl Iterator<Item = (&u64, &JobRecord)> {
    jobs.iter().filter(|(_, job)| job.state == JobState::Running)
}
