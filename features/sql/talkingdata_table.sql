-- The TalkingData click table (Kaggle columns; attributed_time dropped as in the seed demo).
-- click_time is a TIMESTAMP in epoch milliseconds; string timestamps load as UTC+8 (OpenMLDB).
CREATE TABLE IF NOT EXISTS talkingdata (
    ip INT,
    app INT,
    device INT,
    os INT,
    channel INT,
    click_time TIMESTAMP,
    is_attributed INT,
    INDEX(KEY=ip, TS=click_time, TTL=0m, TTL_TYPE=absolute)
);
