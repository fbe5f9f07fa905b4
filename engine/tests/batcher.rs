//! Merged forward passes: the steps of several caches (different prompts, row counts and
//! wants) run as one batch and give **bit for bit** what each gives alone (the quantized
//! model's matmuls are batch-invariant); threads that generate at the same time, sampling
//! with seeds, share passes and produce exactly their sequential outputs.

mod common;

use common::{engine, max_abs_diff, row};
use deal_backend::sampling::SamplingParams;
use deal_engine::model::{ForwardJob, LogitsFor};
use deal_engine::GenerateParams;

#[test]
fn merged_jobs_match_their_separate_passes() {
    let e = engine();
    let m = e.model();
    let (mut a, _) = e.prefill(&e.encode_prompt("The old lighthouse keeper").unwrap()).unwrap();
    let (mut b, _) = e.prefill(&e.encode_prompt("Recipe for a cake: first, take").unwrap()).unwrap();
    b.fork(3).unwrap();
    let (mut c, _) = e.prefill(&e.encode_prompt("1, 2, 3,").unwrap()).unwrap();
    let (mut a2, mut b2, mut c2) = (a.deep_clone().unwrap(), b.deep_clone().unwrap(), c.deep_clone().unwrap());
    let ta = vec![vec![1234u32]];
    let tb = vec![vec![100u32], vec![200], vec![300]];
    let tc = vec![vec![17u32, 18]]; // two new tokens: a different width, batched on its own

    let mut jobs = [
        ForwardJob { cache: &mut a, tokens: &ta, want: LogitsFor::Last },
        ForwardJob { cache: &mut b, tokens: &tb, want: LogitsFor::Last },
        ForwardJob { cache: &mut c, tokens: &tc, want: LogitsFor::Last },
    ];
    let merged: Vec<_> = m.forward_many(&mut jobs).into_iter().map(|r| r.unwrap()).collect();
    let alone = [
        m.forward(&mut a2, &ta, LogitsFor::Last).unwrap(),
        m.forward(&mut b2, &tb, LogitsFor::Last).unwrap(),
        m.forward(&mut c2, &tc, LogitsFor::Last).unwrap(),
    ];
    for (j, (x, y)) in merged.iter().zip(&alone).enumerate() {
        let (lx, ly) = (x.logits.as_ref().unwrap(), y.logits.as_ref().unwrap());
        assert_eq!(lx.dims(), ly.dims(), "job {j}");
        for r in 0..lx.dims()[0] {
            let d = max_abs_diff(&row(lx, r), &row(ly, r));
            assert_eq!(d, 0.0, "job {j} row {r}: merged vs alone differ by {d}");
        }
        assert_eq!(x.hidden.flatten_all().unwrap().to_vec1::<f32>().unwrap(), y.hidden.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    // the caches advanced alike: a second merged step (mixed wants) still matches
    let mut jobs = [
        ForwardJob { cache: &mut a, tokens: &ta, want: LogitsFor::None },
        ForwardJob { cache: &mut b, tokens: &tb, want: LogitsFor::Last },
    ];
    let merged: Vec<_> = m.forward_many(&mut jobs).into_iter().map(|r| r.unwrap()).collect();
    assert!(merged[0].logits.is_none());
    let alone_b = m.forward(&mut b2, &tb, LogitsFor::Last).unwrap();
    for r in 0..3 {
        let d = max_abs_diff(&row(merged[1].logits.as_ref().unwrap(), r), &row(alone_b.logits.as_ref().unwrap(), r));
        assert_eq!(d, 0.0, "second step row {r}: {d}");
    }
    // a bad job fails alone; the others still run
    let (mut d, _) = e.prefill(&e.encode_prompt("Hello").unwrap()).unwrap();
    let bad = vec![vec![u32::MAX]];
    let mut jobs = [
        ForwardJob { cache: &mut d, tokens: &bad, want: LogitsFor::Last },
        ForwardJob { cache: &mut c, tokens: &tc, want: LogitsFor::Last },
    ];
    let res = m.forward_many(&mut jobs);
    assert!(res[0].is_err() && res[1].is_ok());
}

#[test]
fn concurrent_seeded_generations_share_passes_and_match_sequential_outputs() {
    let e = engine();
    let prompts = ["The capital of France is", "Once upon a time", "My favourite food is", "The sea is"];
    // sampled, seeded: any numeric difference would change the draws
    let sampling = SamplingParams { temperature: 0.9, seed: 42, ..Default::default() };
    let params = GenerateParams { max_tokens: 24, sampling, ..Default::default() };
    let sequential: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| e.generate(&e.encode_prompt(p).unwrap(), &params, &mut |_| true).unwrap().tokens)
        .collect();
    let before = e.scheduler_stats();
    let concurrent: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let params = params.clone();
                s.spawn(move || e.generate(&e.encode_prompt(p).unwrap(), &params, &mut |_| true).unwrap().tokens)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = e.scheduler_stats();
    assert_eq!(concurrent, sequential, "merged passes change no sampled token");
    let (passes, jobs) = (after.passes - before.passes, after.jobs - before.jobs);
    assert!(jobs >= 4 * 12, "every step of every generation ran: {jobs}");
    assert!(passes < jobs, "concurrent steps shared passes: {jobs} calls in {passes} passes");
    eprintln!("{jobs} forward calls in {passes} passes ({:.2} per pass)", jobs as f64 / passes as f64);
}
