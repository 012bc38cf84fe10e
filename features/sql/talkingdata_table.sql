-- The TalkingData click table (Kaggle columns; attributed_time dropped as in the seed demo).
-- click_time is a TIMESTAMP in epoch milliseconds; string timestamps load as UTC+8 (OpenMLDB).
-- Every click has an ip and a time (the index's key and ts): NOT NULL lets the embedded engine
-- store the table clustered by that index.
CREATE TABLE IF NOT EXISTS talkingdata (
    ip INT NOT NULL,
    app INT,
    device INT,
    os INT,
    channel INT,
    click_time TIMESTAMP NOT NULL,
    is_attributed INT,
    INDEX(KEY=ip, TS=click_time, TTL=0m, TTL_TYPE=absolute)
);
