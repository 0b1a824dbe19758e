//! `agora-apps`: the apps framework on its own (the same as `agora apps`).

fn main() {
    eprintln!("use `agora apps`");
}
