//! Loads the bundled model and streams a story to stdout.
//!
//!   story [MODEL_DIR] [MAX_TOKENS] [PROMPT]
//!
//! MODEL_DIR defaults to the installed bundled model (pkg-config's datadir)
//! or $MINERVA_MODEL. Greedy: the same model and prompt give the same story.
use std::io::Write;

fn main() {
    if let Err(e) = run() {
        eprintln!("story: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = match args.get(1) {
        Some(d) => d.into(),
        None => std::env::var_os("MINERVA_MODEL")
            .map(Into::into)
            .or_else(minerva::bundled_model_dir)
            .ok_or("no model directory given and no bundled model known")?,
    };
    let max_tokens: i32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(199);
    let prompt_text = args.get(3).map(String::as_str).unwrap_or("");

    // the library's diagnostics (say, an unknown MINERVA_CPU) come here, not to stderr
    minerva::set_log_callback(Some(Box::new(|level, msg| eprintln!("[minerva {level:?}] {msg}"))));
    let est = minerva::Model::estimate_memory(&dir, 0)?;
    let mut last = 0;
    let mut on_progress = |done: u64, total: u64| last = if total > 0 { done * 100 / total } else { 100 };
    let model = minerva::Model::load_with_progress(&dir, 0, Some(&mut on_progress))?;
    let info = model.info()?;
    eprintln!(
        "libminerva {}: {} ({} layers, context {}, chat format {}), loaded {}%, about {} KiB needed",
        minerva::version(),
        info.arch,
        info.n_layer,
        info.n_ctx_train,
        info.chat_format,
        last,
        est.total_bytes / 1024
    );
    let mut session = model.session(&minerva::SessionOptions::default())?;
    let prompt = model.tokenize(prompt_text, true)?;
    let out = std::io::stdout();
    let r = session.generate(&prompt, &minerva::GenerateOptions::greedy(max_tokens), |text| {
        let mut o = out.lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
        true
    })?;
    eprintln!("\n[{} tokens, stop: {:?}]", r.n_generated, r.stop_reason);
    Ok(())
}
