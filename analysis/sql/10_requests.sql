-- requests: the REST requests (http-request frames) with their HTTP response.
-- record_handle comes from the path (/outbound-records/<handle>), the rest from the JSON body.
CREATE OR REPLACE VIEW requests AS
WITH req AS (
    SELECT session_id, seq, exchange_id, t_wall_ns, http_method, http_path,
           CASE WHEN json_valid(try(decode(raw))) THEN try(decode(raw))::JSON END AS body
    FROM frames
    WHERE kind = 'http-request' AND direction = 'out'
), resp AS (
    SELECT session_id, exchange_id, t_wall_ns, http_status,
           CASE WHEN json_valid(try(decode(raw))) THEN try(decode(raw))::JSON END AS body
    FROM frames
    WHERE kind = 'http-response' AND direction = 'in'
)
SELECT req.session_id, req.seq, req.exchange_id,
       req.t_wall_ns AS request_ns,
       req.http_method AS method,
       req.http_path AS path,
       nullif(regexp_extract(req.http_path, '/outbound-records/([^/?]+)', 1), '') AS record_handle,
       req.body->>'$.operationName' AS operation_name,
       req.body->>'$.referenceId' AS reference_id,
       req.body->>'$.campaignName' AS campaign_name,
       req.body->>'$.callingList' AS calling_list,
       TRY_CAST(req.body->>'$.applicationId' AS BIGINT) AS application_id,
       resp.t_wall_ns AS response_ns,
       resp.http_status AS status,
       TRY_CAST(resp.body->>'$.statusCode' AS BIGINT) AS status_code
FROM req
LEFT JOIN resp ON resp.session_id = req.session_id AND resp.exchange_id = req.exchange_id;
