//! Log output in Nix's style, filtered by `-v` or `ARMITAGE_LOG`.

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,armitage=info,store=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARMITAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).event_format(NixStyle).init();
}

/// Log lines as Nix prints them: plain for information, `warning: ` and
/// `error: ` prefixes, the level name for debug and trace. No colour codes.
struct NixStyle;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for NixStyle
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        match *event.metadata().level() {
            tracing::Level::ERROR => write!(writer, "error: ")?,
            tracing::Level::WARN => write!(writer, "warning: ")?,
            tracing::Level::INFO => {}
            tracing::Level::DEBUG => write!(writer, "debug: ")?,
            tracing::Level::TRACE => write!(writer, "trace: ")?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
