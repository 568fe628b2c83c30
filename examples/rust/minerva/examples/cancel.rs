//! Cancels a generation from another thread.
//!
//!   cancel [MODEL_DIR] [AFTER]
//!
//! A worker thread generates a long story; the main thread, holding only a
//! `CancelHandle`, cancels it once AFTER (default 10) tokens have arrived
//! (the worker's callback waits for the main thread to have cancelled, so
//! the count is exact). Prints "cancelled after N tokens" and exits 0 when
//! the generation ended with a cancellation and no token after the request.
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};

fn main() {
    if let Err(e) = run() {
        eprintln!("cancel: {e}");
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
    let after: i32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let model = minerva::Model::load(&dir)?;
    let mut session = model.session(&minerva::SessionOptions::default())?;
    let handle = session.cancel_handle();
    let prompt = model.tokenize("Once upon a time", true)?;
    let seen = Arc::new(AtomicI32::new(0));
    let (tx, rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let seen_w = seen.clone();
    let worker = std::thread::spawn(move || {
        let opts = minerva::GenerateOptions::greedy(400);
        let r = session.generate(&prompt, &opts, |_text| {
            if seen_w.fetch_add(1, Ordering::SeqCst) + 1 == after {
                let _ = tx.send(());
                let _ = ack_rx.recv(); // the main thread has cancelled
            }
            true
        });
        (r, session.n_past())
    });
    // the main thread: wait for AFTER tokens, then cancel
    rx.recv()?;
    let requested_at = seen.load(Ordering::SeqCst);
    assert!(handle.cancel(), "the session is alive");
    ack_tx.send(())?;
    let (r, n_past) = worker.join().map_err(|_| "worker panicked")?;
    let total = seen.load(Ordering::SeqCst);
    match r {
        Err(e) if e.is_cancelled() => {
            println!("cancelled after {total} tokens (requested at {requested_at}; context {n_past}): {e}");
            if total != requested_at {
                return Err(format!("{} tokens came after the request", total - requested_at).into());
            }
        }
        Err(e) => return Err(e.into()),
        Ok(r) => return Err(format!("not cancelled: {} tokens, {:?}", r.n_generated, r.stop_reason).into()),
    }
    drop(model);
    assert!(!handle.cancel(), "the handle outlives the session and does nothing");
    Ok(())
}
