//! One module per subcommand: its clap arguments and the function that runs it.

pub mod build;
