-- Task counts by status, model and engine for /metrics, read from this
-- index alone at every scrape.
CREATE INDEX tasks_metrics ON tasks(status, model, provider);
