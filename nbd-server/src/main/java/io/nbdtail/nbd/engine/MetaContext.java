package io.nbdtail.nbd.engine;

import io.nbdtail.volume.Volume;

import java.util.ArrayList;
import java.util.List;

/**
 * A metadata context a client can select with NBD_OPT_SET_META_CONTEXT and query with NBD_CMD_BLOCK_STATUS.
 *
 * @param id       the context id sent to the client, fixed per name for the session.
 * @param name     the full name, such as {@code qemu:dirty-bitmap:before-upgrade}.
 * @param kind     what the extents' flags mean.
 * @param snapshot for {@link Kind#DIRTY_BITMAP}, the snapshot the bitmap counts changes since.
 */
public record MetaContext(int id, String name, Kind kind, String snapshot) {
    public static final String BASE_ALLOCATION = "base:allocation";
    public static final String ALLOCATION_DEPTH = "qemu:allocation-depth";
    public static final String DIRTY_BITMAP_PREFIX = "qemu:dirty-bitmap:";

    /** What BLOCK_STATUS reports for the context. */
    public enum Kind {
        /** HOLE (1) and ZERO (2) flags. */
        BASE_ALLOCATION,
        /** 0 unallocated, 1 the top layer, 2 the one below, ... (qemu-nbd's meaning). */
        ALLOCATION_DEPTH,
        /** 1 where the volume changed since the snapshot. */
        DIRTY_BITMAP
    }

    /** The contexts a volume offers: base:allocation, qemu:allocation-depth and one dirty bitmap per snapshot. */
    public static List<MetaContext> offeredBy(final Volume volume) {
        final List<MetaContext> contexts = new ArrayList<>();
        contexts.add(new MetaContext(1, BASE_ALLOCATION, Kind.BASE_ALLOCATION, null));
        contexts.add(new MetaContext(2, ALLOCATION_DEPTH, Kind.ALLOCATION_DEPTH, null));
        int id = 16;
        for (final String snapshot : volume.dirtyBitmaps()) {
            contexts.add(new MetaContext(id++, DIRTY_BITMAP_PREFIX + snapshot, Kind.DIRTY_BITMAP, snapshot));
        }
        return contexts;
    }

    /**
     * Whether {@code query} names this context. In a LIST, the namespace queries {@code base:} and {@code qemu:}
     * and the prefix {@code qemu:dirty-bitmap:} match every context under them, as the spec allows; a SET needs
     * the exact name.
     */
    public boolean matches(final String query, final boolean list) {
        if (query.equals(name)) {
            return true;
        }
        if (!list) {
            return false;
        }
        return switch (query) {
            case "base:" -> kind == Kind.BASE_ALLOCATION;
            case "qemu:" -> kind != Kind.BASE_ALLOCATION;
            case DIRTY_BITMAP_PREFIX -> kind == Kind.DIRTY_BITMAP;
            default -> false;
        };
    }
}
