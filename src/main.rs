//! The `chargetail` binary: everything lives in the library; see `cli`.
fn main() -> std::process::ExitCode {
    chargetail::cli::main()
}
