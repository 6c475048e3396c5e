package io.nbdtail.nbd.protocol;

import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_DF;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_FAST_ZERO;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_FUA;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_NO_HOLE;
import static io.nbdtail.nbd.protocol.NbdConstants.CMD_FLAG_REQ_ONE;

/**
 * Transmission-phase commands. An unknown type is not a protocol violation (the spec asks for an
 * {@code EINVAL} reply), so {@link #valueOf(int)} answers {@link #UNKNOWN} instead of throwing.
 */
public enum NbdCommand {
    READ(0, CMD_FLAG_FUA | CMD_FLAG_DF),
    WRITE(1, CMD_FLAG_FUA),
    DISC(2, CMD_FLAG_FUA),
    FLUSH(3, CMD_FLAG_FUA),
    TRIM(4, CMD_FLAG_FUA),
    CACHE(5, CMD_FLAG_FUA),
    WRITE_ZEROES(6, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO),
    BLOCK_STATUS(7, CMD_FLAG_FUA | CMD_FLAG_REQ_ONE),
    UNKNOWN(-1, 0);

    private static final NbdCommand[] BY_TYPE = {READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS};

    private final int type;
    private final int validFlags;

    NbdCommand(final int type, final int validFlags) {
        this.type = type;
        this.validFlags = validFlags;
    }

    /** The wire value, or -1 for {@link #UNKNOWN}. */
    public int type() {
        return type;
    }

    /**
     * The command flags the spec allows on this command. FUA is valid on every command ("the server MUST
     * accept all commands with this bit set"); whether DF may be used also depends on negotiation.
     */
    public int validFlags() {
        return validFlags;
    }

    /** {@code true} for the commands that change the disc. */
    public boolean writes() {
        return this == WRITE || this == TRIM || this == WRITE_ZEROES;
    }

    public static NbdCommand valueOf(final int type) {
        return type >= 0 && type < BY_TYPE.length ? BY_TYPE[type] : UNKNOWN;
    }
}
