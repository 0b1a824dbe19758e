//! A burst of one-shot runs: 100 jobs × 100 `POST /v1/jobs/{id}/runs`, 10,000 runs
//! submitted at once, all complete — each exactly once.
//!
//! The cron instance is a real `agora cron` process and the master a real one; the
//! agents are simulated in this process (`SimAgent`: the real agent protocol, tasks
//! that finish at once). 10,000 real task processes (an executor and a shell each)
//! take minutes on a small CI machine, and what is tested here is the cron side:
//! recording, launching and finishing runs at that rate, none lost or doubled.

mod apps_support;
mod cron_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_tests::{ClusterBuilder, SimAgent, SimAgentConfig, SimCounters, node_bin, within};
use apps_support::{get_json, stop};
use cron_support::{job, request, start_cron};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const JOBS: usize = 100;
const RUNS_PER_JOB: usize = 100;
const AGENTS: usize = 8;
/// Requests in flight at once while submitting.
const CONCURRENT_REQUESTS: usize = 64;
/// The longest the whole burst may take to complete, from the first submission.
const BURST_DEADLINE: Duration = Duration::from_secs(240);

fn job_id(i: usize) -> String {
    format!("burst-{i:03}")
}

/// The successes and failures of every job, summed, from `embed=historySummary`.
async fn outcomes(cron: &str) -> Result<(u64, u64, Vec<Value>), String> {
    let jobs = get_json(cron, "/v1/jobs?embed=historySummary").await?;
    let jobs = jobs
        .as_array()
        .cloned()
        .ok_or_else(|| format!("not a list: {jobs}"))?;
    let sum = |field: &str| {
        jobs.iter()
            .map(|j| j["historySummary"][field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    Ok((sum("successCount"), sum("failureCount"), jobs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_runs_submitted_at_once_all_complete_once() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(0).start().await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let mut config = SimAgentConfig::new(
            vec![cluster.master_addr.clone()],
            "cpus:100;mem:100000;disk:100000",
        )
        .expect("a simulated agent's config");
        config.hostname = format!("sim-{i}");
        config.finish_tasks = true;
        agents.push(SimAgent::start(config).expect("a simulated agent"));
    }
    for agent in &agents {
        within("a simulated agent to register", agent.wait_registrations(1)).await;
    }
    let (cron_process, cron) = start_cron(&cluster.master_addr).await;

    for i in 0..JOBS {
        let definition = job(&job_id(i), "true", &[]).to_string();
        let (status, body) = request(&cron, "POST", "/v1/jobs", Some(&definition)).await;
        assert_eq!(status, 201, "{body}");
    }

    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(CONCURRENT_REQUESTS));
    let mut submissions = JoinSet::new();
    for round in 0..RUNS_PER_JOB {
        for i in 0..JOBS {
            let (cron, limit) = (cron.clone(), limit.clone());
            submissions.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("the semaphore is open");
                let path = format!("/v1/jobs/{}/runs", job_id(i));
                let (status, body) = request(&cron, "POST", &path, None).await;
                (round, i, status, body)
            });
        }
    }
    let mut run_ids = std::collections::BTreeSet::new();
    while let Some(joined) = submissions.join_next().await {
        let (round, i, status, body) = joined.expect("a submission task");
        assert_eq!(status, 201, "run {round} of {}: {body}", job_id(i));
        let run: Value = serde_json::from_str(&body).expect("a run's JSON");
        let id = format!("{}/{}", job_id(i), run["id"].as_str().expect("a run id"));
        assert!(run_ids.insert(id.clone()), "run id {id} given twice");
    }
    println!(
        "{} runs submitted in {:.1} s",
        run_ids.len(),
        started.elapsed().as_secs_f64()
    );

    let total = (JOBS * RUNS_PER_JOB) as u64;
    let jobs = loop {
        let seen = match outcomes(&cron).await {
            Ok((succeeded, failed, jobs)) => {
                assert_eq!(failed, 0, "no run fails: {jobs:?}");
                if succeeded >= total {
                    break jobs;
                }
                format!("{succeeded} of {total} runs succeeded")
            }
            Err(error) => error,
        };
        assert!(
            started.elapsed() < BURST_DEADLINE,
            "the burst did not complete within {BURST_DEADLINE:?}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "{total} runs complete {:.1} s after the first submission",
        started.elapsed().as_secs_f64()
    );
    for job in &jobs {
        assert_eq!(
            job["historySummary"]["successCount"].as_u64(),
            Some(RUNS_PER_JOB as u64),
            "{job}"
        );
    }
    let launched: u64 = agents
        .iter()
        .map(|a| SimCounters::get(&a.counters().launched))
        .sum();
    let duplicates: u64 = agents
        .iter()
        .map(|a| SimCounters::get(&a.counters().duplicate_launches))
        .sum();
    assert_eq!(duplicates, 0, "no task launched twice");
    assert_eq!(launched, total, "one task per run");
    let spread = agents
        .iter()
        .filter(|a| SimCounters::get(&a.counters().launched) > 0)
        .count();
    println!("tasks ran on {spread} of {AGENTS} agents");

    stop(cron_process, "agora cron").await;
    for agent in agents {
        agent.stop().await;
    }
    cluster.shutdown().await;
}
