package ninep

// SplicedReplies returns how many Rread replies s has sent with sendfile.
func SplicedReplies(s *Server) int64 { return s.spliced.Load() }
