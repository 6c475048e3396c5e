package io.nbdtail.nbd.protocol;

/**
 * Wire constants of the NBD protocol, fixed newstyle. Values are the ones in the spec ({@code doc/proto.md} of
 * NetworkBlockDevice/nbd), not in the reference {@code nbd.h}, which differs for some of them (its
 * {@code NBD_REPLY_TYPE_BLOCK_STATUS} is 3, the spec says 5; its command flags are shifted by 16).
 */
public final class NbdConstants {
    private NbdConstants() {
    }

    // --- Magic numbers ("Handshake" and "Transmission") ---
    /** "NBDMAGIC", the first 8 bytes of the greeting. */
    public static final long NBDMAGIC = 0x4e42444d41474943L;
    /** "IHAVEOPT", the second 8 bytes of the newstyle greeting and the start of every option request. */
    public static final long IHAVEOPT = 0x49484156454F5054L;
    /** Start of every option reply (fixed newstyle). */
    public static final long OPTION_REPLY_MAGIC = 0x3e889045565a9L;
    public static final int REQUEST_MAGIC = 0x25609513;
    public static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    public static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;

    // --- Handshake flags (server, 16 bit) and client flags (32 bit) ---
    public static final int FLAG_FIXED_NEWSTYLE = 1;
    public static final int FLAG_NO_ZEROES = 1 << 1;
    public static final int CLIENT_FLAG_FIXED_NEWSTYLE = 1;
    public static final int CLIENT_FLAG_NO_ZEROES = 1 << 1;
    public static final int KNOWN_CLIENT_FLAGS = CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES;

    // --- Options ---
    public static final int OPT_EXPORT_NAME = 1;
    public static final int OPT_ABORT = 2;
    public static final int OPT_LIST = 3;
    public static final int OPT_PEEK_EXPORT = 4;
    public static final int OPT_STARTTLS = 5;
    public static final int OPT_INFO = 6;
    public static final int OPT_GO = 7;
    public static final int OPT_STRUCTURED_REPLY = 8;
    public static final int OPT_LIST_META_CONTEXT = 9;
    public static final int OPT_SET_META_CONTEXT = 10;
    public static final int OPT_EXTENDED_HEADERS = 11;
    /**
     * nbdtail's own option between tails (live mirroring): a JSON request, answered with one
     * {@link #REP_NBDTAIL_MIRROR} reply (JSON) and an ACK, or an error reply. Other servers answer ERR_UNSUP.
     */
    public static final int OPT_NBDTAIL_MIRROR = 0x4e544d01;

    // --- Option reply types; errors have bit 31 set ---
    public static final int REP_ACK = 1;
    public static final int REP_SERVER = 2;
    public static final int REP_INFO = 3;
    public static final int REP_META_CONTEXT = 4;
    /** The JSON answer to {@link #OPT_NBDTAIL_MIRROR}. */
    public static final int REP_NBDTAIL_MIRROR = 0x4e544d01;
    public static final int REP_ERR_UNSUP = 0x80000001;
    public static final int REP_ERR_POLICY = 0x80000002;
    public static final int REP_ERR_INVALID = 0x80000003;
    public static final int REP_ERR_PLATFORM = 0x80000004;
    public static final int REP_ERR_TLS_REQD = 0x80000005;
    public static final int REP_ERR_UNKNOWN = 0x80000006;
    public static final int REP_ERR_SHUTDOWN = 0x80000007;
    public static final int REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
    public static final int REP_ERR_TOO_BIG = 0x80000009;

    // --- Info types inside NBD_REP_INFO ---
    public static final int INFO_EXPORT = 0;
    public static final int INFO_NAME = 1;
    public static final int INFO_DESCRIPTION = 2;
    public static final int INFO_BLOCK_SIZE = 3;

    // --- Transmission flags (16 bit) ---
    public static final int TFLAG_HAS_FLAGS = 1;
    public static final int TFLAG_READ_ONLY = 1 << 1;
    public static final int TFLAG_SEND_FLUSH = 1 << 2;
    public static final int TFLAG_SEND_FUA = 1 << 3;
    public static final int TFLAG_ROTATIONAL = 1 << 4;
    public static final int TFLAG_SEND_TRIM = 1 << 5;
    public static final int TFLAG_SEND_WRITE_ZEROES = 1 << 6;
    public static final int TFLAG_SEND_DF = 1 << 7;
    public static final int TFLAG_CAN_MULTI_CONN = 1 << 8;
    public static final int TFLAG_SEND_CACHE = 1 << 10;
    public static final int TFLAG_SEND_FAST_ZERO = 1 << 11;

    // --- Command flags (16 bit) ---
    public static final int CMD_FLAG_FUA = 1;
    public static final int CMD_FLAG_NO_HOLE = 1 << 1;
    public static final int CMD_FLAG_DF = 1 << 2;
    public static final int CMD_FLAG_REQ_ONE = 1 << 3;
    public static final int CMD_FLAG_FAST_ZERO = 1 << 4;

    // --- Structured reply flags and chunk types ---
    public static final int REPLY_FLAG_DONE = 1;
    public static final int REPLY_TYPE_NONE = 0;
    public static final int REPLY_TYPE_OFFSET_DATA = 1;
    public static final int REPLY_TYPE_OFFSET_HOLE = 2;
    public static final int REPLY_TYPE_BLOCK_STATUS = 5;
    public static final int REPLY_TYPE_ERROR = 0x8001;
    public static final int REPLY_TYPE_ERROR_OFFSET = 0x8002;

    // --- base:allocation status flags ---
    public static final int STATE_HOLE = 1;
    public static final int STATE_ZERO = 1 << 1;

    // --- Meta context names ---
    public static final String CONTEXT_BASE_ALLOCATION = "base:allocation";

    // --- Sizes ---
    /** Greeting: NBDMAGIC(8) IHAVEOPT(8) flags(2). */
    public static final int GREETING_LENGTH = 18;
    /** Option request header: IHAVEOPT(8) option(4) length(4). */
    public static final int OPTION_HEADER_LENGTH = 16;
    /** Option reply header: magic(8) option(4) type(4) length(4). */
    public static final int OPTION_REPLY_HEADER_LENGTH = 20;
    /** Request: magic(4) flags(2) type(2) cookie(8) offset(8) length(4). */
    public static final int REQUEST_LENGTH = 28;
    /** Simple reply: magic(4) error(4) cookie(8). */
    public static final int SIMPLE_REPLY_LENGTH = 16;
    /** Structured reply chunk header: magic(4) flags(2) type(2) cookie(8) length(4). */
    public static final int CHUNK_HEADER_LENGTH = 20;
    /** The 124 zero bytes after an EXPORT_NAME reply unless NO_ZEROES was negotiated. */
    public static final int EXPORT_NAME_ZEROES = 124;
    /** The spec's hard limit on a string (export name, description, context name). */
    public static final int MAX_STRING_LENGTH = 4096;
}
