//! The `agora` binary, built under a name the tests can find (see Cargo.toml).

fn main() -> std::process::ExitCode {
    agora::main()
}
