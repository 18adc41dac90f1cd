-- The writer's side of the hash chain, cheaper to run (issue 18). The chain is the one
-- 0006 defines, byte for byte: encoding version 1 (docs/audit.md), the same body and
-- step, in position order, under the same ledger_head row lock, in the same statement.
-- Only the way the writer's APPEND computes it changes:
--
-- * The body takes the event type and the metadata already as UTF-8 bytes, so the APPEND
--   renders each once. chronos_chain_body (0006) uses each twice (its length, then its
--   bytes), and PostgreSQL inlines it by substituting the expression, so it printed every
--   event's jsonb metadata twice.
-- * chronos_chain_advance returns one row (OUT parameters) rather than a set: no
--   tuplestore for its result, and the APPEND is planned for one head row, not a
--   thousand.
-- * The events' hashes come back as one bytea, 32 bytes per event in position order,
--   rather than as a bytea[]. An element of a flat bytea[] is found by walking the array
--   from its start, and the APPEND looked one up twice per event, which made a batch's
--   cost quadratic in its size; a 32-byte substring is found at once.
--
-- 0006's functions stay as they are: a writer still running the APPEND of 0006 during an
-- upgrade keeps calling them, and they extend the same chain.

-- chronos_chain_body of 0006, but with the event type and the metadata text given as
-- their UTF-8 bytes (convert_to(event_type, 'UTF8') and convert_to(metadata::text,
-- 'UTF8')). Each parameter is a plain column at the call site, so inlining copies no
-- work.
CREATE FUNCTION chronos_chain_body_utf8(stream_id uuid, stream_version bigint,
                                        event_type bytea, schema_version integer,
                                        payload bytea, metadata bytea)
    RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN uuid_send(stream_id) || int8send(stream_version)
        || int4send(length(event_type)) || event_type
        || int4send(schema_version)
        || int4send(length(payload)) || payload
        || int4send(length(metadata)) || metadata;

-- The writer's APPEND calls this once per batch, after the bodies are built: under the
-- ledger_head row lock (FOR UPDATE takes the lock that has always serialized positions,
-- the UPDATE keeps it to the commit) it takes the batch's positions and recorded time,
-- chains the bodies in position order from the head's hash, and moves the head.
CREATE FUNCTION chronos_chain_advance(bodies bytea[], OUT base bigint,
                                      OUT stamped_at timestamptz, OUT hashes bytea)
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    hash bytea;
    stamp bytea;
    body bytea;
    chained bytea[] := '{}';
    event_count integer := 0;
BEGIN
    SELECT h.position, greatest(h.recorded_at, clock_timestamp()), h.chain_hash
      INTO base, stamped_at, hash
      FROM ledger_head AS h WHERE h.id = 1 FOR UPDATE;
    stamp := int8send((extract(epoch FROM stamped_at) * 1000000)::bigint);
    -- chronos_chain_step (0006), unrolled so the loop calls no function per event. The
    -- hashes are kept in an array (plpgsql assigns an element in place) and joined once
    -- at the end: appending each to one bytea would copy what is there every time.
    FOREACH body IN ARRAY coalesce(bodies, '{}') LOOP
        event_count := event_count + 1;
        hash := sha256(hash || '\x01'::bytea || int8send(base + event_count) || body
                       || stamp);
        chained[event_count] := hash;
    END LOOP;
    hashes := coalesce((SELECT string_agg(c.link, ''::bytea ORDER BY c.n)
                        FROM unnest(chained) WITH ORDINALITY AS c(link, n)), ''::bytea);
    UPDATE ledger_head AS h
       SET position = base + event_count, recorded_at = stamped_at, chain_hash = hash
     WHERE h.id = 1;
END;
$$;
