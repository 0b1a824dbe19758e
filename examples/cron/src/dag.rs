//! Dependencies between jobs: a DAG, cycles refused. Pure.
