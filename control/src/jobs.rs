//! Jobs: the controller's records of long operations (a planned transfer, a removal), which
//! `GET /admin/jobs` and `GET /admin/jobs/{id}` show from any member, and which survive a
//! change of leader because they live in the controller's state. A job's runner proposes its
//! start, its steps and its end; the controller's leader fails the running jobs of a data
//! leader it replaces.

use std::time::Duration;

use serde_json::{json, Value};
use strata_core::cluster::AdminError;
use strata_core::controller::{Command, JobKind, JobRecord, JobState};

use crate::roles::{now_ms, Control};

/// How many times a start is tried again when another member took the same id meanwhile.
const START_ATTEMPTS: usize = 3;
/// How long a job's start is proposed again while the controller cannot say whether it
/// committed (its leader failed or changed): the same start is the same job, so repeating it
/// is safe, and a start that committed unseen would otherwise leave a job running forever,
/// blocking every later one.
const START_SETTLE_LIMIT: Duration = Duration::from_secs(15);
/// The same for a job's end, which runs in the background: longer.
const FINISH_SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// The pause between two such proposals.
const SETTLE_PAUSE: Duration = Duration::from_millis(100);

impl Control {
    /// A new running job record run by this node.
    pub(crate) fn job_record(&self, kind: JobKind, subject: &str, progress: &str) -> JobRecord {
        let (runner, _) = self.identity();
        JobRecord {
            kind,
            subject: subject.to_string(),
            runner,
            state: JobState::Running,
            progress: progress.to_string(),
            error: None,
            started_ms: now_ms(),
            finished_ms: None,
            token: rand::random::<u64>() | 1,
        }
    }

    /// Commits the start of a job; answers its id. Refused (7034) while another runs.
    pub(crate) async fn start_job(&self, record: JobRecord) -> Result<u64, AdminError> {
        let controller = self
            .controller()
            .ok_or_else(|| AdminError::controller_unavailable("this node is in no cluster"))?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let id = controller.state().next_job_id();
            let start = Command::StartJob { id, record: record.clone() };
            match self.propose_settled(start, START_SETTLE_LIMIT).await {
                Ok(()) => return Ok(id),
                Err(error) if error.message.contains(&format!("job {id} exists")) => {
                    last = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| AdminError::controller_unavailable("no job id")))
    }

    /// Records that this node's running job reached `progress` (best effort).
    pub(crate) async fn note_progress(&self, progress: &str) {
        let Some(controller) = self.controller() else { return };
        let (me, _) = self.identity();
        for id in controller.state().running_jobs_of(&me) {
            let advance = Command::AdvanceJob { id, progress: progress.to_string() };
            if let Err(error) = self.propose_anywhere(advance).await {
                tracing::debug!(%error, id, "job progress not recorded");
            }
        }
    }

    /// Commits the end of job `id`, failed with `error` if any (best effort: logged).
    pub(crate) async fn finish_job(&self, id: u64, error: Option<String>) {
        let finish = Command::FinishJob { id, error, at_ms: now_ms() };
        if let Err(error) = self.propose_settled(finish, FINISH_SETTLE_LIMIT).await {
            tracing::warn!(%error, id, "the end of a job could not be recorded");
        }
    }

    /// Proposes `command`, again while the controller is unavailable (7035: no leader, or
    /// one that failed before it could say whether the command committed), up to `limit`.
    /// Only for commands whose repetition changes nothing once one of them committed.
    async fn propose_settled(&self, command: Command, limit: Duration) -> Result<(), AdminError> {
        let unavailable = AdminError::controller_unavailable("").code;
        let started = tokio::time::Instant::now();
        loop {
            match self.propose_anywhere(command.clone()).await {
                Err(error) if error.code == unavailable && started.elapsed() < limit => {
                    tracing::debug!(%error, %command, "the controller is unavailable: again");
                    tokio::time::sleep(SETTLE_PAUSE).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// On the controller's leader, after replacing `lost`: its running jobs failed.
    pub(crate) async fn fail_jobs_of(&self, lost: &str) {
        let Some(controller) = self.controller() else { return };
        for id in controller.state().running_jobs_of(lost) {
            let error = format!("{lost}, which ran it, was lost");
            let finish = Command::FinishJob { id, error: Some(error), at_ms: now_ms() };
            if let Err(error) = self.propose_settled(finish, FINISH_SETTLE_LIMIT).await {
                tracing::warn!(%error, id, "a lost member's job could not be failed");
            }
        }
    }

    /// `GET /admin/jobs`: every job the controller keeps, newest last.
    pub(crate) fn jobs_json(&self) -> Result<Value, AdminError> {
        let controller = self.controller().ok_or_else(no_jobs_here)?;
        let jobs = controller.state().jobs;
        Ok(Value::Array(jobs.iter().map(|(id, job)| job_json(*id, job)).collect()))
    }

    /// `GET /admin/jobs/{id}`.
    pub(crate) fn job_json(&self, id: &str) -> Result<Value, AdminError> {
        let controller = self.controller().ok_or_else(no_jobs_here)?;
        let number = id.parse::<u64>().map_err(|_| AdminError::no_such_job(id))?;
        let jobs = controller.state().jobs;
        jobs.get(&number)
            .map(|job| job_json(number, job))
            .ok_or_else(|| AdminError::no_such_job(id))
    }
}

fn no_jobs_here() -> AdminError {
    AdminError::controller_unavailable("jobs need a cluster with automatic failover")
}

fn job_json(id: u64, job: &JobRecord) -> Value {
    let kind = match job.kind {
        JobKind::Transfer => "transfer",
        JobKind::Remove => "remove",
        JobKind::Join => "join",
    };
    let state = match job.state {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
    };
    json!({
        "id": id,
        "kind": kind,
        "subject": job.subject,
        "runner": job.runner,
        "state": state,
        "progress": job.progress,
        "error": job.error,
        "started": crate::http::ctime(job.started_ms),
        "finished": job.finished_ms.map(crate::http::ctime),
        "elapsed_ms": job.finished_ms.unwrap_or_else(now_ms).saturating_sub(job.started_ms),
    })
}
