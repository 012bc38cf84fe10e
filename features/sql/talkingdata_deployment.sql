-- The seed's feature SQL: the same text runs offline (training) and as deployment `demo` (serving).
SELECT
    is_attributed,
    app,
    device,
    os,
    channel,
    hour(click_time) AS hour,
    day(click_time) AS day,
    count(channel) OVER w1 AS qty,
    count(channel) OVER w2 AS ip_app_count,
    count(channel) OVER w3 AS ip_app_os_count
FROM talkingdata
WINDOW
    w1 AS (PARTITION BY ip ORDER BY click_time ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW),
    w2 AS (PARTITION BY ip, app ORDER BY click_time
           ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
    w3 AS (PARTITION BY ip, app, os ORDER BY click_time
           ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
