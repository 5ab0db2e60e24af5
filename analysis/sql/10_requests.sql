-- requests: one row per REST request that acts (an outbound http-request frame other than GET,
-- HEAD or OPTIONS: those read, and no ack ever answers them), with its HTTP response.
-- record_handle comes from the path (/outbound-records/<handle>); operationName, referenceId,
-- campaignName, callingList and applicationId from the JSON body, parsed once. A body that is
-- not JSON leaves those columns NULL. The response is the http-response frame of the same
-- exchange_id in the same session.
CREATE OR REPLACE VIEW requests AS
WITH req AS (
    SELECT session_id, seq, exchange_id, t_wall_ns, http_method, http_path,
           try(json_transform(decode(raw), '{"operationName": "VARCHAR", "referenceId": "VARCHAR",
               "campaignName": "VARCHAR", "callingList": "VARCHAR", "applicationId": "VARCHAR"}'))
               AS body
    FROM frames
    WHERE kind = 'http-request' AND direction = 'out'
      AND coalesce(http_method, 'POST') NOT IN ('GET', 'HEAD', 'OPTIONS')
), resp AS (
    SELECT session_id, exchange_id, t_wall_ns, http_status,
           try(json_transform(decode(raw), '{"statusCode": "VARCHAR"}')) AS body
    FROM frames
    WHERE kind = 'http-response' AND direction = 'in'
)
SELECT req.session_id, req.seq, req.exchange_id,
       req.t_wall_ns AS request_ns,
       req.http_method AS method,
       req.http_path AS path,
       nullif(regexp_extract(req.http_path, '/outbound-records/([^/?]+)', 1), '') AS record_handle,
       req.body.operationName AS operation_name,
       req.body.referenceId AS reference_id,
       coalesce(req.body.campaignName,
                nullif(regexp_extract(req.http_path, '/outbound-campaigns/([^/?]+)', 1), ''))
           AS campaign_name,
       req.body.callingList AS calling_list,
       TRY_CAST(req.body.applicationId AS BIGINT) AS application_id,
       resp.t_wall_ns AS response_ns,
       resp.http_status AS status,
       TRY_CAST(resp.body.statusCode AS BIGINT) AS status_code
FROM req
LEFT JOIN resp ON resp.session_id = req.session_id AND resp.exchange_id = req.exchange_id;
