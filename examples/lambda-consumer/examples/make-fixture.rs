//! Rewrites `tests/fixtures/kinesis-event.json` from `lambda_consumer::fixture`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kinesis-event.json"
    );
    let json = serde_json::to_string_pretty(&lambda_consumer::fixture::recorded_event())?;
    std::fs::write(path, json + "\n")?;
    println!("wrote {path}");
    Ok(())
}
