fn main() -> std::process::ExitCode {
    agora::main()
}
