import { z } from 'zod';

/** With the u flag a surrogate range matches only unpaired halves. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;
const CONTROL_CHAR = /\p{Cc}/u;

/**
 * Text a person chose (display names, room names): Unicode without NUL, other control
 * characters or lone surrogates. Postgres refuses NUL (a 500 after the fact) and the
 * driver silently replaces a lone surrogate, so the stored evidence would differ from
 * what was shown; both are refused at the boundary instead.
 */
export const displayText = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !CONTROL_CHAR.test(s), 'must not contain NUL or other control characters')
    .refine((s) => !LONE_SURROGATE.test(s), 'must be well-formed Unicode (no lone surrogates)');

/** A participant identity (join token subject, peer id, recording participant): closed pattern, no "..". */
export const ParticipantIdSchema = z
  .string()
  .regex(/^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/, 'identity: 1-64 chars of A-Z a-z 0-9 _ . @ -, starting with a letter or digit, without ".."');

/** A participant's display name. */
export const DisplayNameSchema = displayText(100);

/** The flags' types, without defaults (a PATCH names only what changes). */
const RoomFlagFields = {
  /** Auto-record from the first producer. */
  record: z.boolean(),
  /** Recording may be toggled only with the room secret or the admin key. */
  lockRecord: z.boolean(),
  /** notify: participants are told; required: only those who consent are recorded. */
  consent: z.enum(['notify', 'required']),
  transcribe: z.boolean(),
  /** BCP-47-ish language code for transcription ("en", "de"...). */
  language: z.string().regex(/^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$/),
  retentionPolicy: displayText(100),
  maxPublishers: z.number().int().min(0).max(1000),
  /** Join/leave fan-out floods big rooms; off by default, the list is fetched on demand. */
  notifyJoining: z.boolean(),
  /** meeting: everyone may publish; allhands: only `speakers` (and those a host promotes), the rest join receive-only. */
  mode: z.enum(['meeting', 'allhands']),
  /** Identities that may publish in an allhands room (maxPublishers still caps them). */
  speakers: z.array(ParticipantIdSchema).max(1000),
  /** Video of only the N most recent active speakers is forwarded to each participant; 0 forwards every video. */
  lastN: z.number().int().min(0).max(100),
};

/** Room flags, set by the admin API and persisted with the room (v1). */
export const RoomFlagsSchema = z
  .object({
    record: RoomFlagFields.record.default(false),
    lockRecord: RoomFlagFields.lockRecord.default(false),
    consent: RoomFlagFields.consent.default('notify'),
    transcribe: RoomFlagFields.transcribe.default(false),
    language: RoomFlagFields.language.default('en'),
    retentionPolicy: RoomFlagFields.retentionPolicy.optional(),
    maxPublishers: RoomFlagFields.maxPublishers.default(50),
    notifyJoining: RoomFlagFields.notifyJoining.default(false),
    mode: RoomFlagFields.mode.default('meeting'),
    speakers: RoomFlagFields.speakers.default([]),
    lastN: RoomFlagFields.lastN.default(0),
  })
  .strict();
export type RoomFlags = z.output<typeof RoomFlagsSchema>;

export const RoomIdSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'room id: 1-64 chars of A-Z a-z 0-9 _ -');

export const CreateRoomBodySchema = z
  .object({
    id: RoomIdSchema.optional(),
    name: displayText(200).optional(),
    flags: RoomFlagsSchema.default(RoomFlagsSchema.parse({})),
  })
  .strict();

// Not RoomFlagsSchema.partial(): zod 4 still applies a field's default inside .optional(), so
// a PATCH of one flag would reset every other flag to its default.
export const UpdateRoomFlagsBodySchema = z.object(RoomFlagFields).partial().strict();

export const SetRecordingBodySchema = z.object({ enabled: z.boolean() }).strict();

export const MintTokenBodySchema = z
  .object({
    identity: ParticipantIdSchema,
    name: DisplayNameSchema,
    ttlMinutes: z.number().int().min(1).max(10_080).optional(),
    /** A host may promote viewers of an allhands room to speakers. */
    role: z.enum(['participant', 'host']).optional(),
  })
  .strict();

/** Admin promotion of a participant in an allhands room to speaker. */
export const PromoteBodySchema = z.object({ peerId: ParticipantIdSchema }).strict();

export const DrainBodySchema = z.object({ enabled: z.boolean() }).strict();

export const IngestBodySchema = z
  .object({
    identity: ParticipantIdSchema,
    name: DisplayNameSchema,
    tracks: z
      .array(
        z
          .object({
            kind: z.enum(['audio', 'video']),
            ssrc: z.number().int().min(1).max(0xffffffff),
            payloadType: z.number().int().min(96).max(127),
          })
          .strict(),
      )
      .min(1)
      .max(2),
  })
  .strict();
