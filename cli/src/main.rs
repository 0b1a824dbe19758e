/// Bursts of task updates allocate from many threads at once; glibc's malloc
/// serialised them on its arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agora::main()
}
