//! What adapters cost a run: cold (compile every built-in adapter) and warm (cache hit).
//!
//! `warm_run` is the figure the 2 ms budget is about: everything a run does in this layer once the
//! cache is warm (create the sandbox, load the built-in adapters' recorded info, select, deserialize
//! the chosen adapter, instantiate it in a fresh store, make and validate a plan). Run with
//! `cargo bench -p ecs-exec --bench adapter`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ecs_exec::adapter::{AdapterSet, CacheMode, Invocation, LoadOptions, new_nonce};

fn options(cache: CacheMode) -> LoadOptions {
    LoadOptions {
        cache,
        ..LoadOptions::default()
    }
}

fn one_run(options: &LoadOptions) {
    let mut adapters = AdapterSet::load(options).expect("load adapters");
    let pipe = "rails runner -";
    let adapter = adapters.select(Some(pipe), None).expect("select");
    let invocation =
        Invocation::one_off_with_input(Some(pipe.to_owned()), vec![], b"puts Rails.env\n");
    black_box(adapter.plan(&invocation, &new_nonce()).expect("plan"));
}

fn benches(c: &mut Criterion) {
    let cache_dir = tempfile::tempdir().expect("temporary cache directory");
    let warm = options(CacheMode::Dir(cache_dir.path().to_owned()));
    one_run(&warm); // fill the cache

    let mut cold = c.benchmark_group("cold");
    cold.sample_size(10)
        .measurement_time(Duration::from_secs(20));
    cold.bench_function("compile_all_builtin_and_plan", |b| {
        b.iter(|| one_run(&options(CacheMode::Off)))
    });
    cold.finish();

    c.bench_function("warm_run", |b| b.iter(|| one_run(&warm)));

    let mut adapters = AdapterSet::load(&warm).expect("load adapters");
    let adapter = adapters.select(Some("python3"), None).expect("select");
    let invocation = Invocation::one_off_streamed(Some("python3".to_owned()), vec![], None);
    adapter
        .plan(&invocation, &new_nonce())
        .expect("first plan prepares the adapter");
    c.bench_function("plan_on_loaded_adapter", |b| {
        b.iter(|| black_box(adapter.plan(&invocation, &new_nonce()).expect("plan")))
    });
    c.bench_function("load_set_warm", |b| {
        b.iter(|| black_box(AdapterSet::load(&warm).expect("load")))
    });
}

criterion_group!(adapter, benches);
criterion_main!(adapter);
