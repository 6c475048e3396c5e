package io.nbdtail.nbd.engine;

import java.net.SocketAddress;
import java.util.List;

/**
 * The exports a client may see. Both lookups take the client's address so that access control can hide an
 * export completely: a refused client gets the same answer as for a name that does not exist.
 */
public interface ExportRegistry {
    /** The export called {@code name} if {@code client} may open it, else {@code null}. */
    Export find(String name, SocketAddress client);

    /** The exports {@code client} may open, for NBD_OPT_LIST. */
    List<Export> list(SocketAddress client);
}
